# shellcheck shell=bash
# Package installation (Debian 12 "bookworm" packages of OpenStack Zed). Sourced by devcloud.sh.

# Everything the dev cloud runs on. --no-install-recommends keeps it to about 1.7 GB on disk.
PKGS=(
  # infrastructure
  mariadb-server python3-pymysql rabbitmq-server memcached python3-memcache
  # OpenStack services
  keystone glance-api placement-api
  nova-api nova-conductor nova-scheduler nova-compute-kvm
  neutron-server neutron-linuxbridge-agent neutron-dhcp-agent
  cinder-api cinder-scheduler cinder-volume
  # block storage: a single-node Ceph (RBD) behind Cinder; QEMU reaches it through librbd
  ceph-mon ceph-mgr ceph-osd ceph-common qemu-block-extra
  # clients (status checks, resources, debugging)
  python3-openstackclient
  # what nova and neutron call on the host
  iptables ebtables ipset dnsmasq-base libvirt-daemon-system qemu-system-x86 qemu-utils genisoimage
)
# shellcheck disable=SC2034  # used by test-guest.sh
# Only for the busybox test guest (`devcloud.sh test-guest`), not needed by `up`.
TEST_GUEST_PKGS=(debian-installer-12-netboot-amd64 cpio)

# missing_pkgs PKG...: print the packages that are not installed
missing_pkgs() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | has '^install ok installed$' || echo "$p"
  done
}

# apt_install PKG...: install what is missing, without starting any daemon
apt_install() {
  local missing
  mapfile -t missing < <(missing_pkgs "$@")
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  step "apt-get install ${#missing[@]} packages (log: $WORK/apt-install.log)"
  # Postinst scripts must not start half-configured daemons: they are configured first, then started here.
  # A policy-rc.d someone else put there is kept aside and restored.
  local policy=/usr/sbin/policy-rc.d
  if [ -e $policy ] && [ ! -e $policy.devcloud-saved ]; then mv $policy $policy.devcloud-saved; fi
  printf '#!/bin/sh\n# written by devcloud during apt-get install\nexit 101\n' >$policy
  chmod +x $policy
  local rc=0
  # The lock timeout lets us queue behind another apt-get (the image builds use apt too).
  # --force-unsafe-io: dpkg skips an fsync per file (a dev machine: a crash mid-install means re-running).
  # --force-confmiss: a package removed but not purged whose /etc files were deleted by hand gets them back
  # (without it dpkg keeps them "deleted by the admin" and mariadb-common's postinst fails on its missing
  # mariadb.cnf: seen here when a dev cloud was torn down by hand and installed again).
  local apt=(apt-get -o DPkg::Lock::Timeout=900 -o Dpkg::Options::=--force-unsafe-io
    -o Dpkg::Options::=--force-confmiss -y -q)
  if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$WORK/apt-install.log" 2>&1; then
    # Stale or missing package lists (a fresh machine) or a mirror hiccup: update, then try again.
    step "apt-get install failed; apt-get update and retry"
    retry 3 10 "${apt[@]}" update >>"$WORK/apt-install.log" 2>&1 || true
    retry 2 10 "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$WORK/apt-install.log" 2>&1 || rc=$?
  fi
  rm -f $policy
  if [ -e $policy.devcloud-saved ]; then mv $policy.devcloud-saved $policy; fi
  if [ $rc -ne 0 ]; then
    tail -n 20 "$WORK/apt-install.log" >&2
    die "apt-get install failed (full log: $WORK/apt-install.log); try 'apt-get update' and run again"
  fi
}

do_install() { apt_install "${PKGS[@]}"; }
