#!/bin/sh
# Leave a clean template: no build inputs, no build CA, no caches, small logs, cloud-init cleaned, no SSH
# host keys, empty machine-id. The build user is removed last, by /var/tmp/lcs-finalize.sh (written here).
set -eu

export DEBIAN_FRONTEND=noninteractive
rm -rf "${LCS_BUILD_DIR:?}"

if [ -e /usr/local/share/ca-certificates/lcs-build-extra-ca.crt ]; then
    rm -f /usr/local/share/ca-certificates/lcs-build-extra-ca.crt
    update-ca-certificates --fresh >/dev/null
    echo "build CA: removed"
fi

apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /root/.cache /opt/jupyter/share/jupyter/lab/staging

cat > /var/tmp/lcs-finalize.sh <<'FINAL'
#!/bin/sh
# Last step of an image build, run as root: remove the build login, clean state written since, power off.
set -eu
for u in "$LCS_BUILD_USER" "$LCS_CLOUD_USER"; do
    if id "$u" >/dev/null 2>&1; then
        userdel -f -r "$u" 2>/dev/null || userdel -f "$u"
    fi
done
rm -f /etc/sudoers.d/90-cloud-init-users
cloud-init clean --logs --seed
rm -rf /var/lib/cloud/instance /var/lib/cloud/instances/*
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id /var/lib/systemd/random-seed
# journald keeps writing into /var/log/journal: move it to /run first, then the directory stays empty.
journalctl --relinquish-var 2>/dev/null || systemctl stop systemd-journald.socket systemd-journald
rm -rf /var/log/journal/* /tmp/* /var/tmp/*
find /var/log -type f \( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' \) -delete
find /var/log -type f -exec truncate -s 0 {} +
rm -f /root/.bash_history
sync
fstrim -av || true
if [ "${LCS_NO_POWEROFF:-0}" != 1 ]; then
    shutdown -P now
fi
FINAL
# The values the finalize step needs, fixed now: it runs as Packer's shutdown_command, without this environment.
sed -i "s/\"\$LCS_BUILD_USER\" \"\$LCS_CLOUD_USER\"/$LCS_BUILD_USER $LCS_CLOUD_USER/" /var/tmp/lcs-finalize.sh
chmod 0700 /var/tmp/lcs-finalize.sh
echo "cleanup: done, finalize step written"
