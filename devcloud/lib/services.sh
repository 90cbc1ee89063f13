# shellcheck shell=bash
# Starting, stopping and checking the daemons without systemd. Sourced by devcloud.sh.
#
# Every daemon is started in a session of its own (setsid), with no terminal and its output in a
# log, so that it outlives the shell (or CI step, or invoke pty) that started it. MariaDB's init
# script, for one, leaves mysqld_safe in the caller's process group: it died with that shell.

# In start order; stop goes the other way.
INFRA_SERVICES=(mariadb rabbitmq-server memcached virtlogd libvirtd)
OS_SERVICES=(keystone glance-api placement-api nova-api nova-conductor nova-scheduler nova-compute
             neutron-api neutron-rpc-server neutron-linuxbridge-agent neutron-dhcp-agent
             cinder-api cinder-scheduler cinder-volume)
# Ceph, started by hand as its vstart.sh does (Debian ships only systemd units for it); set up by storage.sh
CEPH_SERVICES=(ceph-mon ceph-mgr ceph-osd)

# is_running NAME: the daemon's process exists (not: it answers; see the health checks)
is_running() {
  case $1 in
    mariadb) pgrep -x mariadbd >/dev/null ;;
    rabbitmq-server) pgrep -f 'beam.*-s rabbit' >/dev/null || pgrep -f 'beam.*rabbit' >/dev/null ;;
    memcached|virtlogd|libvirtd|ceph-mon|ceph-mgr|ceph-osd) pgrep -x "$1" >/dev/null ;;
    # Not `/etc/init.d/NAME status`: for the uwsgi-run APIs it asks whether *any* uwsgi runs.
    *) own_pid "$1" >/dev/null ;;
  esac
}

# Where the init scripts keep their pid files (a setting only for the tests of own_pid).
RUN_DIR=${DEVCLOUD_RUN_DIR:-/run}

# pidfile_of SERVICE: where its init script keeps the pid (/run/PROJECT/NAME.pid)
pidfile_of() {
  case $1 in
    neutron-api) echo "$RUN_DIR/neutron/neutron-server.pid" ;;
    *) echo "$RUN_DIR/${1%%-*}/$1.pid" ;;
  esac
}

# own_pid SERVICE: print the pid in SERVICE's pid file if that process is SERVICE; else remove a
# stale pid file and fail.
# Pids get reused. When the daemons die without their init scripts (a session, container or machine
# ends), their pid files stay behind in /run; after a restart of the machine or of its pid namespace
# such a file can name an unrelated process. The init scripts trust the file alone: `start` then says
# "already running" and starts nothing, and `stop` sends TERM, then KILL, to whatever has that pid.
# (In CI, neutron-api's stale file named the new mariadbd: neutron-api never started, and restarting
# it "because it is unhealthy" killed the database under keystone.)
# SERVICE is recognised by its command line: /usr/bin/SERVICE (python daemons, also when they
# rename themselves "SERVICE (/usr/bin/python3 /usr/bin/SERVICE ...)") or its uwsgi ini file
# /etc/PROJECT/SERVICE-uwsgi.ini. A process still in start-stop-daemon (between writing the pid
# file and exec) counts as SERVICE.
own_pid() {
  local f pid cmd
  f=$(pidfile_of "$1")
  [ -s "$f" ] || return 1
  pid=$(cat "$f" 2>/dev/null) || return 1
  if [[ $pid =~ ^[0-9]+$ ]] && cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline"); then
    case " $cmd" in
      *" /usr/bin/$1 "*|*"/$1-uwsgi.ini "*|*start-stop-daemon*) echo "$pid"; return 0 ;;
    esac
    echo "[$(date -u +%FT%TZ)] stale pid file $f: pid $pid is not $1 but: ${cmd:0:120}; removed" >>"$WORK/$1.start.log"
  fi
  rm -f "$f"
  return 1
}

STARTED=()   # the daemons start_one started (empty: everything was running already)

# start_one NAME: start a daemon detached from this shell, unless it runs already
start_one() {
  local name=$1 log="$WORK/$1.start.log"
  if is_running "$name"; then return 0; fi
  STARTED+=("$name")
  echo "[$(date -u +%FT%TZ)] start $name" >>"$log"
  # 9>&-: the daemon must not inherit devcloud.sh's lock (it would hold it for its whole life)
  case $name in
    virtlogd|libvirtd) setsid -w "$name" -d </dev/null >>"$log" 2>&1 9>&- ;;
    # the Ceph daemons fork into the background themselves; ids: mon a, mgr x, osd 0
    ceph-mon|ceph-mgr|ceph-osd)
      setsid -w "$name" -i "$(ceph_id "$name")" --setuser ceph --setgroup ceph </dev/null >>"$log" 2>&1 9>&- ;;
    rabbitmq-server) ERL_EPMD_ADDRESS=127.0.0.1 setsid -w /etc/init.d/"$name" start </dev/null >>"$log" 2>&1 9>&- ;;
    *) setsid -w /etc/init.d/"$name" start </dev/null >>"$log" 2>&1 9>&- ;;
  esac || {
    echo "devcloud: $name did not start (see $log and $(daemon_log "$name")); the logs end with:" >&2
    # shellcheck disable=SC2046  # daemon_log names one or more files
    tail -q -n 4 $(daemon_log "$name") 2>/dev/null | sed 's/^/  | /' >&2
    return 1
  }
}

# stop_one NAME: stop a daemon (no error when it is not running)
stop_one() {
  local name=$1 pids
  case $name in
    virtlogd|libvirtd|memcached)
      pids=$(pgrep -x "$name" || true)
      if [ -n "$pids" ]; then
        # shellcheck disable=SC2086  # one word per pid
        kill $pids 2>/dev/null || true
      fi ;;
    ceph-mon|ceph-mgr|ceph-osd)
      # TERM, then up to 30 s for a clean shutdown (the OSD flushes its BlueStore), then KILL
      pids=$(pgrep -x "$name" || true)
      [ -n "$pids" ] || return 0
      # shellcheck disable=SC2086  # one word per pid
      kill $pids 2>/dev/null || true
      retry 30 1 not_running "$name" || pkill -KILL -x "$name" || true ;;
    mariadb|rabbitmq-server)
      setsid -w /etc/init.d/"$name" stop </dev/null >>"$WORK/$name.start.log" 2>&1 || true ;;
    # Only through a pid file that names this daemon: the init script would kill any pid it holds.
    *) if own_pid "$name" >/dev/null; then
         setsid -w /etc/init.d/"$name" stop </dev/null >>"$WORK/$name.start.log" 2>&1 || true
       fi ;;
  esac
}

# daemon_log NAME: where a daemon logs; the block storage daemons here, every other one as svc_log says
daemon_log() {
  case $1 in
    cinder-*) echo "/var/log/cinder/$1.log" ;;
    ceph-*) echo "/var/log/ceph/ceph-${1#ceph-}.$(ceph_id "$1").log $WORK/$1.start.log" ;;
    *) svc_log "$1" ;;
  esac
}

not_running() { ! is_running "$1"; }

# ceph_id NAME: the id of the one Ceph daemon of that kind here
ceph_id() {
  case $1 in ceph-mon) echo a ;; ceph-mgr) echo x ;; ceph-osd) echo 0 ;; esac
}

restart_one() { stop_one "$1"; sleep 1; start_one "$1"; }

# net_up: the veth pair of the flat network and the host's address on it
net_up() {
  ip link show "$PHY" >/dev/null 2>&1 || ip link add "$PHY" type veth peer name "$HOSTIF"
  ip -4 addr show dev "$HOSTIF" | has " $HOST_IP/" || ip addr add "$HOST_IP/24" dev "$HOSTIF"
  ip link set "$PHY" up
  ip link set "$HOSTIF" up
}

start_infra() {
  step "start mariadb rabbitmq memcached libvirt; network $HOSTIF $HOST_IP/24"
  net_up
  [ -e /dev/kvm ] && chmod 666 /dev/kvm
  local s
  for s in "${INFRA_SERVICES[@]}"; do start_one "$s"; done
  retry 60 1 mysqladmin ping >/dev/null 2>&1 || die "mariadb does not answer (see $(svc_log mariadb))"
  retry 30 1 virsh -c qemu:///system version >/dev/null 2>&1 || die "libvirtd does not answer (see $(svc_log libvirtd))"
  # libvirt's own NAT network would give guests a way out: never run it.
  virsh -c qemu:///system net-autostart --disable default >/dev/null 2>&1 || true
  virsh -c qemu:///system net-destroy default >/dev/null 2>&1 || true
  wait_port 5672 rabbitmq-server 120
  wait_port 11211 memcached 30
}

start_openstack() {
  step "start ${OS_SERVICES[*]}"
  local s failed=()
  for s in "${OS_SERVICES[@]}"; do
    start_one "$s" || failed+=("$s")
    # keystone first: everything else authenticates against it as it starts
    if [ "$s" = keystone ]; then wait_port 5000 keystone 120; fi
  done
  if [ ${#failed[@]} -gt 0 ]; then die "could not start: ${failed[*]}"; fi
}

# stop_guests: power off every VM nova made (libvirt domains instance-*); nova marks them SHUTOFF
stop_guests() {
  local d
  virsh -c qemu:///system version >/dev/null 2>&1 || return 0
  for d in $(virsh -c qemu:///system list --name 2>/dev/null | grep '^instance-' || true); do
    virsh -c qemu:///system destroy "$d" >/dev/null 2>&1 || true
  done
}

# stop_openstack: stop every OpenStack service, side by side (each init script waits for its daemon)
stop_openstack() {
  local s pids=() p
  for s in "${OS_SERVICES[@]}"; do
    stop_one "$s" &
    pids+=("$!")
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
}

do_stop_services() {
  local i f pid
  stop_openstack
  # the DHCP agent's dnsmasq outlives the agent
  for f in /var/lib/neutron/dhcp/*/pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    # only if that pid is still a dnsmasq (pids get reused; see own_pid)
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dnsmasq ]; then kill "$pid" 2>/dev/null || true; fi
  done
  stop_guests
  for ((i = ${#CEPH_SERVICES[@]} - 1; i >= 0; i--)); do stop_one "${CEPH_SERVICES[i]}"; done
  for ((i = ${#INFRA_SERVICES[@]} - 1; i >= 0; i--)); do stop_one "${INFRA_SERVICES[i]}"; done
}
