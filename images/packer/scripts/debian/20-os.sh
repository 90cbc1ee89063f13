#!/bin/sh
# Debian specifics: cloud-init's locale module wants en_US.UTF-8 (else `cloud-init status` ends in error).
set -eu

if ! locale -a 2>/dev/null | grep -qi '^en_US\.utf-\?8$'; then
    sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen
    locale-gen
fi
