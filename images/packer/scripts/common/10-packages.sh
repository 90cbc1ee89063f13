#!/bin/sh
# The guest packages every image needs. Installed only when missing, so a base that already has them
# (the official cloud images, the local base) builds offline, e.g. in a cloud without a route out.
set -eu

export DEBIAN_FRONTEND=noninteractive
# nftables: the user-data's rule that closes the metadata service to the server's account needs `nft`.
wanted="cloud-init cloud-guest-utils openssh-server qemu-guest-agent python3-venv sudo ca-certificates locales nftables"
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

# Every spawn is a first boot, and cloud-init's network stage holds the boot until the SSH host keys are
# made: only the fast key types (RSA 3072 and DSA cost about 12 s under emulation, measured with
# `cloud-init analyze show`). SSH is for administrators; Jupyter is reached over HTTP.
printf 'ssh_genkeytypes: [ed25519, ecdsa]\n' > /etc/cloud/cloud.cfg.d/40-lcs-ssh-host-keys.cfg
