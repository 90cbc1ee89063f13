#!/bin/sh
# Ubuntu specifics: en_US.UTF-8 for cloud-init's locale module; no snapd (not needed, slows every boot).
set -eu

export DEBIAN_FRONTEND=noninteractive
if ! locale -a 2>/dev/null | grep -qi '^en_US\.utf-\?8$'; then
    locale-gen en_US.UTF-8
fi
if dpkg-query -W -f='${Status}' snapd 2>/dev/null | grep -q "ok installed"; then
    apt-get -q -y purge snapd
fi
