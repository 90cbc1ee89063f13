#!/bin/sh
# Debian specifics, as Debian's official cloud images have them.
set -eu

# cloud-init's locale module wants en_US.UTF-8 (else `cloud-init status` ends in error).
if ! locale -a 2>/dev/null | grep -qi '^en_US\.utf-\?8$'; then
    sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen
    locale-gen
fi
# /etc/hosts follows the instance's hostname (sudo warns on every call otherwise).
printf 'manage_etc_hosts: true\n' > /etc/cloud/cloud.cfg.d/50-lcs-etc-hosts.cfg
