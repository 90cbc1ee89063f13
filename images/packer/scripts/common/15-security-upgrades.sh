#!/bin/sh
# Every installed package upgraded from the distribution's security suite, and from nothing else: Debian's
# <codename>-security (its archive is stable-security, oldstable-security...), Ubuntu's <codename>-security
# pocket. apt pins the security suite above the installed versions and every other suite below them, so
# `upgrade` takes exactly the security fixes (with the new packages they need, e.g. a new kernel ABI).
# Runs in the chroot pre-stage and again in the booted guest, which picks up what was published since.
# A guest without a route to the mirror (a cloud without a way out) keeps the pre-stage's upgrade, which the
# stamp records; without one the build stops. /var/lib/lcs/security-upgrades says when and how many.
set -eu

export DEBIAN_FRONTEND=noninteractive
stamp=/var/lib/lcs/security-upgrades
work=$(mktemp -d)
diverted=""
cleanup() {
    if [ -n "$diverted" ]; then
        rm -f /usr/sbin/update-grub
        dpkg-divert --quiet --local --rename --remove /usr/sbin/update-grub
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

if ! grep -rhsE '^[^#]*-security' /etc/apt/sources.list /etc/apt/sources.list.d/ >/dev/null; then
    echo "security upgrades: no -security suite in /etc/apt/sources.list{,.d}: the base must configure it" >&2
    exit 1
fi
mkdir -p "$work/preferences.d"
cat > "$work/preferences" <<'PIN'
Package: *
Pin: release a=*-security
Pin-Priority: 500

Package: *
Pin: release o=Debian
Pin-Priority: 50

Package: *
Pin: release o=Ubuntu
Pin-Priority: 50
PIN
set -- -o "Dir::Etc::Preferences=$work/preferences" -o "Dir::Etc::PreferencesParts=$work/preferences.d"

if ! apt-get -q update >"$work/update.log" 2>&1 || grep -qE '^(E:|W: (Failed to fetch|Some index files))' "$work/update.log"; then
    cat "$work/update.log"
    if [ -f "$stamp" ]; then
        echo "security upgrades: the mirror cannot be reached from here; keeping the upgrade of $(cat "$stamp")"
        exit 0
    fi
    echo "security upgrades: apt-get update failed and no earlier upgrade is recorded ($stamp)" >&2
    exit 1
fi

# In the chroot pre-stage a new kernel must not run update-grub (no udev there: it would write the loop
# device as the root); the booted guest's GRUB step writes grub.cfg for the new kernel.
if ischroot 2>/dev/null; then
    dpkg-divert --quiet --local --rename --add /usr/sbin/update-grub
    printf '#!/bin/sh\necho "update-grub: deferred to the booted guest"\n' > /usr/sbin/update-grub
    chmod 0755 /usr/sbin/update-grub
    diverted=yes
fi

apt-get "$@" -q -y -o Dpkg::Options::=--force-confold upgrade --with-new-pkgs >"$work/upgrade.log" 2>&1 || {
    cat "$work/upgrade.log" >&2
    exit 1
}
upgraded=$(grep -c '^Unpacking ' "$work/upgrade.log" || true)
left=$(apt-get "$@" -s upgrade --with-new-pkgs | grep -c '^Inst ' || true)
if [ "$left" != 0 ]; then
    apt-get "$@" -s upgrade --with-new-pkgs | grep '^Inst ' >&2
    echo "security upgrades: $left package(s) still have a security upgrade pending" >&2
    exit 1
fi
mkdir -p "$(dirname "$stamp")"
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) ($upgraded package(s) upgraded)" > "$stamp"
echo "security upgrades: $upgraded package(s) upgraded from the security suite, none pending"
apt-get clean
