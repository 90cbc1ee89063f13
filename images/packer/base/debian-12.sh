#!/bin/sh
# Build a bootable Debian 12 base image (qcow2) from Debian packages with mmdebstrap.
#
# This is the stand-in for Debian's official "genericcloud" image on machines that cannot download it:
# the same role (cloud-init, OpenSSH, qemu-guest-agent, GRUB on the serial console, ext4 root labelled
# "root", no SSH host keys, empty machine-id), built only from .deb files on the mirror.
#
# Usage (root): debian-12.sh OUTPUT.qcow2 [WORKDIR]
# Environment: MIRROR (default http://deb.debian.org/debian), SECURITY_MIRROR, DISK_SIZE (default 4G).
set -eu

out=${1:?usage: debian-12.sh OUTPUT.qcow2 [WORKDIR]}
work=${2:-$(mktemp -d /var/tmp/lcs-base.XXXXXX)}
mirror=${MIRROR:-http://deb.debian.org/debian}
security=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
disk_size=${DISK_SIZE:-4G}
suite=bookworm
packages=linux-image-cloud-amd64,grub-pc,openssh-server,cloud-init,cloud-guest-utils,qemu-guest-agent
packages=$packages,python3-venv,sudo,ca-certificates,curl,ifupdown,isc-dhcp-client,dbus
packages=$packages,systemd-timesyncd,locales

raw=$work/base.raw
mnt=$work/mnt
loop=""
mkdir -p "$mnt"

cleanup() {
    set +e
    fsfreeze -u "$mnt" 2>/dev/null
    for d in dev proc sys; do umount -R "$mnt/$d" 2>/dev/null; done
    umount -R "$mnt" 2>/dev/null
    if [ -n "$loop" ]; then
        partx -d "$loop" 2>/dev/null
        losetup -d "$loop" 2>/dev/null
    fi
    rm -f "$raw"
    rmdir "$mnt" 2>/dev/null
}
trap cleanup EXIT INT TERM

# The host exports PIP_*/SSL_* variables that break TLS inside the chroot: run it with a clean env.
in_chroot() {
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive chroot "$mnt" "$@"
}

rm -f "$raw"
truncate -s "$disk_size" "$raw"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$raw"
loop=$(losetup -f --show "$raw")
# This kernel has no partition-table parser for loop devices: add the partition with partx (BLKPG).
partx -d "$loop" 2>/dev/null || true
partx -a "$loop"
i=0
while [ ! -b "${loop}p1" ]; do
    i=$((i + 1))
    [ "$i" -le 10 ] || { echo "build-base: ${loop}p1 did not appear" >&2; exit 1; }
    sleep 1
done

mkfs.ext4 -q -L root "${loop}p1"
mount "${loop}p1" "$mnt"
# Shared propagation: mount namespaces cloned meanwhile (libvirt's qemu, for one) see the umount.
mount --make-rshared "$mnt"

env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    mmdebstrap --variant=important --components=main --include="$packages" \
    "$suite" "$mnt" \
    "deb $mirror $suite main" \
    "deb $mirror $suite-updates main" \
    "deb $security $suite-security main"

echo 'LABEL=root / ext4 errors=remount-ro 0 1' > "$mnt/etc/fstab"
echo debian > "$mnt/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 debian\n' > "$mnt/etc/hosts"
# cloud-init's locale module needs en_US.UTF-8, else `cloud-init status` ends in error.
sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' "$mnt/etc/locale.gen"
in_chroot locale-gen >/dev/null
echo 'LANG=en_US.UTF-8' > "$mnt/etc/default/locale"
if ! grep -q 'interfaces.d' "$mnt/etc/network/interfaces" 2>/dev/null; then
    printf 'auto lo\niface lo inet loopback\nsource /etc/network/interfaces.d/*\n' > "$mnt/etc/network/interfaces"
fi

# GRUB on the serial console: a VM without a video device (Nova without VNC/SPICE) hangs in gfxterm.
cat > "$mnt/etc/default/grub.d/50-serial-console.cfg" <<'GRUB'
GRUB_TIMEOUT=1
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_CMDLINE_LINUX_DEFAULT="console=tty0 console=ttyS0,115200"
GRUB
for d in dev proc sys; do mount --rbind "/$d" "$mnt/$d"; done
in_chroot grub-install --target=i386-pc "$loop"
in_chroot update-grub
# No udev here: grub-mkconfig falls back to root=/dev/loopXp1; point it at the label instead.
sed -i "s|root=${loop}p1|root=LABEL=root|g" "$mnt/boot/grub/grub.cfg"
echo "grub-pc grub-pc/install_devices multiselect /dev/vda" | in_chroot debconf-set-selections

# A clean template: no host keys, empty machine-id, no caches.
rm -f "$mnt"/etc/ssh/ssh_host_*
: > "$mnt/etc/machine-id"
rm -f "$mnt/var/lib/dbus/machine-id"
in_chroot apt-get clean
rm -rf "$mnt"/var/lib/apt/lists/* "$mnt"/var/log/*.log "$mnt"/var/cache/debconf/*-old
for d in dev proc sys; do umount -R "$mnt/$d"; done
fstrim "$mnt" || true

# Freeze = fully flushed; convert while frozen so the copy is consistent even if another mount
# namespace still pins the mount after the umount.
sync -f "$mnt"
fsfreeze -f "$mnt"
mkdir -p "$(dirname "$out")"
qemu-img convert -O qcow2 "$raw" "$out.tmp"
fsfreeze -u "$mnt"
mv "$out.tmp" "$out"
echo "build-base: wrote $out"
