#!/bin/sh
# The guest packages every image needs. Installed only when missing, so a base that already has them
# (the official cloud images, the local base) builds offline, e.g. in a cloud without a route out.
set -eu

export DEBIAN_FRONTEND=noninteractive
wanted="cloud-init cloud-guest-utils openssh-server qemu-guest-agent python3-venv sudo ca-certificates locales"
missing=""
for p in $wanted; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
if [ -n "$missing" ]; then
    echo "packages: installing$missing"
    apt-get -q update
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    apt-get -q -y -o Dpkg::Options::=--force-confold install --no-install-recommends $missing
else
    echo "packages: all present ($wanted)"
fi
