#!/bin/bash
# devcloud.sh: a single-node OpenStack (Debian 12 packages, Zed) on this machine, without systemd.
#
# keystone, glance (file store), placement, nova (libvirt, qemu software emulation, config drive
# forced), neutron (ML2 linuxbridge, one flat network with no uplink and no NAT), cinder (RBD on a
# single-node ceph: mon, mgr, one OSD in a file), mariadb, rabbitmq, memcached. Every endpoint is on
# 127.0.0.1; guests are on 10.99.0.0/24, the host is 10.99.0.1.
#
# Usage: devcloud.sh COMMAND   (as root; `invoke devcloud ...` calls this)
#   up              install what is missing, configure (when changed), start, wait until healthy
#   down            stop every service and power off the VMs (packages and data stay)
#   status          health of every service; exit 1 naming what is broken and how to fix it
#   reset           delete every server and volume of the jupyter project, re-create network and flavors
#   restart NAME    restart one service (NAME as `status` shows it)
#   stop NAME       stop one service (fault injection: the e2e tier stops nova-api mid-spawn)
#   start NAME      start one stopped service (`status` tells when it answers again)
#   test-guest      build and upload 'testvm', a tiny busybox guest (DHCP, config drive, HTTP :8000)
#   facts           print what clients need as JSON
#   configure       force re-configuration (db syncs, catalog, resources) and restart
#
# Settings (environment): DEVCLOUD_PASSWORD (services and admin, default secret),
# DEVCLOUD_JUPYTER_PASSWORD (user jupyter, default: DEVCLOUD_PASSWORD), DEVCLOUD_VIRT_TYPE (qemu),
# DEVCLOUD_FIREWALL (auto|noop), DEVCLOUD_GUEST_PORTS ("22 8000 8888 9443"), DEVCLOUD_WORK (/var/tmp/devcloud),
# DEVCLOUD_CEPH_GIB (32: the OSD's sparse file, also the jupyter project's volume gigabytes quota),
# DEVCLOUD_MIN_FREE_GIB (5: the free disk space `up` requires), DEVCLOUD_KEEP_IMAGES (3: published builds kept).
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
# shellcheck source=lib/install.sh
source "$HERE/lib/install.sh"
# shellcheck source=lib/configure.sh
source "$HERE/lib/configure.sh"
# shellcheck source=lib/services.sh
source "$HERE/lib/services.sh"
# shellcheck source=lib/storage.sh
source "$HERE/lib/storage.sh"

# The environment cloud.py reads (all its settings have the same defaults as here).
cloud_py() {
  DEVCLOUD_PASSWORD=$PW DEVCLOUD_JUPYTER_PASSWORD=$JUPYTER_PW DEVCLOUD_CEPH_GIB=$CEPH_GIB KS=$KS REGION=$REGION NET_NAME=$NET_NAME \
    NET_CIDR=$NET_CIDR HOST_IP=$HOST_IP WORK=$WORK VIRT_TYPE=$VIRT_TYPE "$PY" "$HERE/cloud.py" "$@"
}

# config_stamp: changes whenever what `configure` would write changes (comment lines do not count)
config_stamp() {
  {
    grep -hv '^[[:space:]]*#' "$HERE/lib/common.sh" "$HERE/lib/configure.sh"
    echo "$PW $JUPYTER_PW $VIRT_TYPE ${DEVCLOUD_FIREWALL:-auto} ${DEVCLOUD_GUEST_PORTS:-}"
  } | sha256sum | cut -d' ' -f1
}
STAMP_FILE=$WORK/configured.stamp

configure_all() {
  conf_databases
  # The services' configurations and database migrations are independent of each other: run them
  # side by side (mostly Python start-up and MariaDB round trips; about a third faster on 2 cores).
  local pids=() f errors=0
  for f in conf_keystone conf_glance conf_placement conf_nova conf_neutron conf_cinder; do
    "$f" &
    pids+=("$!")
  done
  for f in "${pids[@]}"; do wait "$f" || errors=1; done
  [ $errors -eq 0 ] || die "configuration failed (see the messages above and $WORK/manage.log)"
  step "restart the OpenStack services with the new configuration"
  stop_openstack
  # Keystone and the catalog first: the others authenticate with their service users as they start.
  start_one keystone
  wait_port 5000 keystone 120
  step "keystone catalog, projects, users"
  cloud_py catalog
}

# configure_storage: Cinder alone (its configuration changed, the rest did not): Nova and Neutron keep running
configure_storage() {
  conf_cinder
  local s
  for s in cinder-api cinder-scheduler cinder-volume; do stop_one "$s"; done
  start_one keystone
  wait_port 5000 keystone 120
  step "keystone catalog (volumev3), users"
  cloud_py catalog
}

# wait_healthy SECONDS [quiet]: until every service-level health check passes
wait_healthy() {
  local deadline=$(( $(date +%s) + $1 )) out
  while true; do
    if out=$(cloud_py health services json 2>&1); then return 0; fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      if [ -z "${2:-}" ]; then echo "$out" | grep '"ok": false' >&2 || true; fi
      return 1
    fi
    sleep 3
  done
}

# heal [SKIP...]: restart the services whose health check fails (a hung agent runs but is dead),
# except SKIP (services that were just started and may still be on their way up)
heal() {
  local name
  for name in $(cloud_py health services tsv 2>/dev/null | awk -F'\t' '$2 == "BROKEN" {print $1}'); do
    case " ${OS_SERVICES[*]} " in *" $name "*) ;; *) continue ;; esac
    case " $* " in *" $name "*) continue ;; esac
    step "restart $name (unhealthy)"
    restart_one "$name" || true
  done
}

do_up() {
  require_free_space
  do_install
  conf_base
  conf_libvirt
  start_infra
  ceph_up
  local stamp sstamp
  stamp=$(config_stamp)
  sstamp=$(storage_stamp)
  if [ "$(cat "$STAMP_FILE" 2>/dev/null)" != "$stamp" ]; then
    rm -f "$STAMP_FILE" "$STORAGE_STAMP_FILE"
    configure_all
  elif [ "$(cat "$STORAGE_STAMP_FILE" 2>/dev/null)" != "$sstamp" ]; then
    rm -f "$STORAGE_STAMP_FILE"
    configure_storage
  fi
  STARTED=()
  start_openstack
  step "wait until nova and neutron report healthy"
  # A service that was running before this `up` and fails its check is at fault (a hung agent,
  # say): restart it now. Services just started get minutes to register and report.
  if ! wait_healthy 15 quiet; then
    heal "${STARTED[@]}"
    if ! wait_healthy 240; then
      heal
      wait_healthy 180 || die "not healthy; see 'devcloud.sh status' and $LOG"
    fi
  fi
  if [ ! -f "$STAMP_FILE" ]; then
    # Map the compute host into cell1 now rather than at the scheduler's next periodic discovery.
    run_as nova nova-manage cell_v2 discover_hosts >/dev/null
  fi
  step "network $NET_NAME, flavors, security group rules, images"
  cloud_py resources
  echo "$stamp" >"$STAMP_FILE"
  echo "$sstamp" >"$STORAGE_STAMP_FILE"
  step "up: the dev cloud is healthy"
}

do_status() {
  # One line per service: its process, then what it answers. STATE/DETAIL in two arrays by name.
  local s name st detail order=()
  declare -A state=() info=()
  note() { # name OK|BROKEN detail: the first BROKEN wins, details accumulate
    if [ -z "${state[$1]:-}" ]; then order+=("$1"); state[$1]=$2; info[$1]=$3; return; fi
    if [ "${state[$1]}" = OK ] && [ "$2" = BROKEN ]; then state[$1]=BROKEN; info[$1]="$3; ${info[$1]}"
    elif [ "$2" = OK ] && [ "${state[$1]}" = OK ]; then info[$1]="${info[$1]}; $3"; fi
  }
  for s in "${INFRA_SERVICES[@]}" "${CEPH_SERVICES[@]}" "${OS_SERVICES[@]}"; do
    if is_running "$s"; then note "$s" OK running; else note "$s" BROKEN "not running (log: $(daemon_log "$s"))"; fi
  done
  if mysqladmin ping >/dev/null 2>&1; then note mariadb OK answers; else note mariadb BROKEN "does not answer"; fi
  if port_open 5672; then note rabbitmq-server OK "port 5672"; else note rabbitmq-server BROKEN "port 5672 closed"; fi
  if port_open 11211; then note memcached OK "port 11211"; else note memcached BROKEN "port 11211 closed"; fi
  if virsh -c qemu:///system version >/dev/null 2>&1; then note libvirtd OK answers; else note libvirtd BROKEN "does not answer"; fi
  if ip -4 addr show dev "$HOSTIF" 2>/dev/null | has " $HOST_IP/"; then
    note "$HOSTIF" OK "$HOST_IP/24"
  else
    note "$HOSTIF" BROKEN "no $HOST_IP on $HOSTIF"
  fi
  local answers=0
  while IFS=$'\t' read -r name st detail; do
    if [ -n "$detail" ]; then note "$name" "$st" "$detail"; answers=$((answers + 1)); fi
  done < <(cloud_py health all tsv 2>/dev/null || true)
  if [ $answers -eq 0 ]; then note "API checks" BROKEN "$HERE/cloud.py health gave no answer"; fi
  local broken=()
  printf '%-26s %-7s %s\n' SERVICE STATE DETAIL
  for name in "${order[@]}"; do
    printf '%-26s %-7s %s\n' "$name" "${state[$name]}" "${info[$name]}"
    if [ "${state[$name]}" = BROKEN ]; then broken+=("$name"); fi
  done
  if [ ${#broken[@]} -eq 0 ]; then
    echo "devcloud: healthy"
    return 0
  fi
  echo
  echo "devcloud: BROKEN: ${broken[*]}"
  echo "fix: 'invoke devcloud up' starts what is stopped and restarts unhealthy services;"
  echo "     one service: '$HERE/devcloud.sh restart NAME'; network or flavors: 'invoke devcloud reset'."
  return 1
}

# do_one stop|start|restart NAME: one service (stop/start also inject faults: the e2e tier stops nova-api)
do_one() {
  local action=$1 name=${2:?$1 needs a service name}
  case " ${INFRA_SERVICES[*]} ${CEPH_SERVICES[*]} ${OS_SERVICES[*]} " in
    *" $name "*) ;;
    *) die "unknown service $name (one of: ${INFRA_SERVICES[*]} ${CEPH_SERVICES[*]} ${OS_SERVICES[*]})" ;;
  esac
  if [ "$action" != stop ] && { [ "$name" = rabbitmq-server ] || [ "$name" = mariadb ]; }; then conf_base; fi
  "${action}_one" "$name"
  step "$action $name: done"
}

do_down() {
  step "stop the guests and every service"
  do_stop_services
  step "down (packages, data and configuration kept; 'invoke devcloud up' brings it back)"
}

do_reset() {
  step "reset: servers and volumes of project jupyter, network $NET_NAME, flavors"
  cloud_py reset
}

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts system daemons)"
cmd=${1:-}
shift || true
case $cmd in
  up|down|reset|configure|restart|stop|start|test-guest)
    # One changing command at a time (the quick start and a test run may both call `up`).
    exec 9>"$WORK/lock"
    flock -w 1800 9 || die "another devcloud.sh holds $WORK/lock for 30 min: is it stuck? (fuser $WORK/lock)"
    ;;
esac
case $cmd in
  up) do_up ;;
  down) do_down ;;
  status) do_status ;;
  reset) do_reset ;;
  restart|stop|start) do_one "$cmd" "$@" ;;
  test-guest) "$HERE/test-guest.sh" ;;
  facts) cloud_py facts ;;
  configure) rm -f "$STAMP_FILE"; do_up ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
