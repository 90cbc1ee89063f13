# shellcheck shell=bash disable=SC2034  # the settings are used by the files that source this one
# Settings and helpers shared by every devcloud step. Sourced by devcloud.sh, never run.
#
# Every setting can be overridden from the environment (DEVCLOUD_*); the defaults are what
# the project's hub configuration, tests and docs assume.

# The OpenStack services are Debian's: they run on /usr/bin/python3, never on a pyenv or venv python
# that may come first on PATH.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export DEBIAN_FRONTEND=noninteractive
# The host may export TLS/pip variables meant for other tools; they are harmless here but keep the
# clients of the services from picking up a venv by accident.
unset PYTHONPATH VIRTUAL_ENV PYTHONHOME

PW=${DEVCLOUD_PASSWORD:-secret}           # every service and user password (dev cloud only)
JUPYTER_PW=${DEVCLOUD_JUPYTER_PASSWORD:-$PW}
IP=127.0.0.1                              # every endpoint listens on loopback
KS=http://$IP:5000
REGION=RegionOne
# Flat provider network: neutron plugs VMs into brq<netid> bridged to PHY, one end of a veth pair;
# the other end (HOSTIF) holds the host's address. No uplink, no NAT: VM traffic stays on this machine.
PHY=os-phy
HOSTIF=os-host
HOST_IP=10.99.0.1
NET_CIDR=10.99.0.0/24
NET_NAME=flatnet
VIRT_TYPE=${DEVCLOUD_VIRT_TYPE:-qemu}     # qemu = software emulation (kvm cannot boot stock kernels here)
# Where logs, timings and the test guest go (outside the repo: root-owned, large).
WORK=${DEVCLOUD_WORK:-/var/tmp/devcloud}
LOG=$WORK/devcloud.log
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)   # the devcloud/ directory
PY=/usr/bin/python3

mkdir -p "$WORK"

T_START=$(date +%s)
# step MESSAGE: a visible, timestamped progress line (also kept in $LOG)
step() { echo "[devcloud +$(( $(date +%s) - T_START ))s] $*" | tee -a "$LOG"; }
die() { echo "devcloud: ERROR: $*" >&2; exit 1; }
# has PATTERN: like grep -q, but reads all its input (no SIGPIPE under pipefail)
has() { grep "$@" >/dev/null; }

# retry TRIES DELAY CMD...: run CMD until it succeeds, at most TRIES times
retry() {
  local tries=$1 delay=$2 i; shift 2
  for ((i = 1; i <= tries; i++)); do
    "$@" && return 0
    sleep "$delay"
  done
  return 1
}

# The least free space (GiB) on the disk of /var/lib that `up` accepts: a CI run takes about 3.5 GiB
# there (Nova's raw copy of the image, the guests' disks, Glance's copy, volumes in Ceph's file).
MIN_FREE_GIB=${DEVCLOUD_MIN_FREE_GIB:-5}

# require_free_space: fail early and clearly when the disk is nearly full, naming the large consumers
require_free_space() {
  local free_kib
  free_kib=$(df -Pk /var/lib | awk 'NR == 2 {print $4}')
  [ "$free_kib" -ge $((MIN_FREE_GIB * 1024 * 1024)) ] && return 0
  echo "devcloud: ERROR: $((free_kib / 1024 / 1024)) GiB free on the disk of /var/lib; 'up' needs $MIN_FREE_GIB GiB" \
    "(DEVCLOUD_MIN_FREE_GIB). The largest directories of the dev cloud:" >&2
  du -sh /var/lib/nova/instances/_base /var/lib/glance/images /var/lib/ceph "$WORK" 2>/dev/null | sed 's/^/  /' >&2
  echo "  (Nova removes base images unused for an hour; 'up' deletes all but the newest published images)" >&2
  exit 1
}

# port_open PORT: true when something listens on 127.0.0.1:PORT
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT NAME [SECONDS]
wait_port() {
  retry "${3:-90}" 1 port_open "$1" || die "$2 does not listen on port $1 after ${3:-90}s (log: $(svc_log "$2"))"
}

# svc_log NAME: where a service logs
svc_log() {
  case $1 in
    mariadb) echo "$WORK/mariadb.start.log /var/lib/mysql/*.err" ;;
    rabbitmq-server) echo "/var/log/rabbitmq/" ;;
    libvirtd|virtlogd) echo "$WORK/$1.log" ;;
    keystone) echo "/var/log/keystone/" ;;
    glance-api) echo "/var/log/glance/" ;;
    placement-api) echo "/var/log/placement/" ;;
    nova-*) echo "/var/log/nova/$1.log" ;;
    neutron-*) echo "/var/log/neutron/" ;;
    *) echo "$WORK/$1.start.log" ;;
  esac
}
