#!/bin/bash
# test-guest.sh: build and upload 'testvm', a tiny guest that boots in seconds under emulation.
#
# Debian's netboot installer kernel with a slim busybox initrd (plus the virtio, cdrom and isofs
# modules of that kernel). At boot it takes a DHCP lease, mounts the config drive, and serves on
# port 8000 a page with its address, meta_data.json and user_data: enough to prove that Nova boots
# a server, Neutron gives it an address, the config drive carries user-data, and the security group
# lets the host reach port 8000. Glance gets three images: testvm-kernel (aki), testvm-ramdisk
# (ari) and testvm (the 'blank' disk booted with that kernel and ramdisk).
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
# shellcheck source=lib/install.sh
source "$HERE/lib/install.sh"

IMG_DIR=$WORK/testvm
DI=/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64

build_initrd() {
  local w=$WORK/testvm-build kv k m
  rm -rf "$w"
  mkdir -p "$w/di" "$w/k" "$w/s/bin" "$w/s/etc" "$w/s/proc" "$w/s/sys" "$w/s/dev" "$w/s/tmp" \
           "$w/s/lib64" "$w/s/lib/x86_64-linux-gnu"
  (cd "$w/di" && zcat "$DI/initrd.gz" | cpio -id 2>/dev/null)
  kv=$(ls "$w/di/lib/modules")
  k=lib/modules/$kv/kernel
  # The modules of exactly the installer's kernel, from the mirror's .deb.
  (cd "$w" && apt-get -o DPkg::Lock::Timeout=900 -o APT::Sandbox::User=root download -q "linux-image-$kv" >/dev/null &&
    dpkg-deb -x linux-image-"$kv"*.deb k)
  cp "$w/di/bin/busybox" "$w/s/bin/"
  cp /lib/x86_64-linux-gnu/libc.so.6 "$w/s/lib/x86_64-linux-gnu/"
  cp -L /lib64/ld-linux-x86-64.so.2 "$w/s/lib64/"
  for a in $("$w/s/bin/busybox" --list); do ln -sf busybox "$w/s/bin/$a"; done
  for m in drivers/virtio/virtio drivers/virtio/virtio_ring drivers/virtio/virtio_pci \
           drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci_legacy_dev net/core/failover \
           drivers/net/net_failover drivers/net/virtio_net drivers/scsi/scsi_common drivers/scsi/scsi_mod \
           drivers/ata/libata drivers/ata/ata_piix drivers/cdrom/cdrom drivers/scsi/sr_mod fs/isofs/isofs \
           drivers/block/virtio_blk; do
    if [ -f "$w/k/$k/$m.ko" ]; then
      mkdir -p "$w/s/$k/$(dirname "$m")"
      cp "$w/k/$k/$m.ko" "$w/s/$k/$m.ko"
    fi
  done
  cat >"$w/s/init" <<'GUEST'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev 2>/dev/null
echo "=== devcloud test guest: $(uname -r) ==="
depmod 2>/dev/null
for m in virtio_pci virtio_net ata_piix sr_mod isofs virtio_blk; do modprobe $m 2>/dev/null; done
sleep 1
IF=$(ls /sys/class/net | grep -v lo | head -1)
ip link set lo up; ip link set "$IF" up
udhcpc -i "$IF" -s /etc/udhcpc.sh -n -q -t 20 -T 2 || echo "DHCP FAILED"
mkdir -p /cd
for d in /dev/sr0 /dev/vdb /dev/sdb /dev/vda; do
  mount -o ro $d /cd 2>/dev/null && [ -d /cd/openstack ] && break; umount /cd 2>/dev/null
done
if [ -f /cd/openstack/latest/user_data ]; then
  cp /cd/openstack/latest/user_data /user_data; echo "=== config drive: user_data found"
else
  echo "=== config drive: no user_data"
fi
cp /cd/openstack/latest/meta_data.json /meta_data.json 2>/dev/null
echo "=== guest ready, serving HTTP on :8000 ==="
while true; do nc -l -p 8000 -e /bin/resp.sh; done
GUEST
  cat >"$w/s/etc/udhcpc.sh" <<'GUEST'
#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface"
    echo "DHCP OK: $interface $ip/$mask" ;;
esac
GUEST
  cat >"$w/s/bin/resp.sh" <<'GUEST'
#!/bin/sh
while read -r l; do l=$(echo "$l" | tr -d '\r'); [ -z "$l" ] && break; done
printf 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n'
echo "hello from $(ip -4 -o addr show | grep -v ' lo ' | awk '{print $4}')"
cat /meta_data.json 2>/dev/null; echo; cat /user_data 2>/dev/null
GUEST
  chmod +x "$w/s/init" "$w/s/etc/udhcpc.sh" "$w/s/bin/resp.sh"
  (cd "$w/s" && find . | cpio -o -H newc 2>/dev/null | gzip -6) >"$IMG_DIR/slim-initrd.gz.tmp"
  mv "$IMG_DIR/slim-initrd.gz.tmp" "$IMG_DIR/slim-initrd.gz"
  rm -rf "$w"
}

upload() {
  local blank=$WORK/blank.qcow2 kernel ramdisk
  export OS_USERNAME=admin OS_PASSWORD=$PW OS_PROJECT_NAME=admin OS_USER_DOMAIN_NAME=Default \
    OS_PROJECT_DOMAIN_NAME=Default OS_AUTH_URL=$KS/v3 OS_IDENTITY_API_VERSION=3 OS_REGION_NAME=$REGION
  if openstack image show testvm -f value -c status 2>/dev/null | has '^active$'; then
    step "image testvm exists"
    return 0
  fi
  [ -f "$blank" ] || qemu-img create -q -f qcow2 "$blank" 1G
  kernel=$(openstack image create testvm-kernel --public --disk-format aki --container-format aki \
    --file "$DI/linux" -f value -c id)
  ramdisk=$(openstack image create testvm-ramdisk --public --disk-format ari --container-format ari \
    --file "$IMG_DIR/slim-initrd.gz" -f value -c id)
  openstack image create testvm --public --disk-format qcow2 --container-format bare --file "$blank" \
    --property kernel_id="$kernel" --property ramdisk_id="$ramdisk" \
    --property os_command_line='console=ttyS0' >/dev/null
  step "uploaded images testvm, testvm-kernel, testvm-ramdisk"
}

mkdir -p "$IMG_DIR"
apt_install "${TEST_GUEST_PKGS[@]}"
if [ ! -s "$IMG_DIR/slim-initrd.gz" ]; then
  step "build the test guest's initrd"
  build_initrd
fi
upload
