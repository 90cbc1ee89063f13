# shellcheck shell=bash
# Configuration of every service, written whole (not patched) so that a re-run converges to the
# same files. Each package's own file is kept once as FILE.orig. Sourced by devcloud.sh.

# write_conf FILE: replace FILE with stdin, keeping the packaged version once as FILE.orig
write_conf() {
  if [ -f "$1" ] && [ ! -f "$1.orig" ]; then cp -a "$1" "$1.orig"; fi
  cat >"$1"
}

# ini_authtoken USER: how an API checks the tokens it receives
ini_authtoken() {
  cat <<INI
[keystone_authtoken]
www_authenticate_uri = $KS
auth_url = $KS
memcached_servers = $IP:11211
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $1
password = $PW
service_token_roles_required = true
INI
}

# ini_client SECTION USER: credentials a service uses to call another one
ini_client() {
  cat <<INI
[$1]
auth_url = $KS
auth_type = password
project_domain_name = Default
user_domain_name = Default
region_name = $REGION
project_name = service
username = $2
password = $PW
INI
}

# uwsgi_tune INI PROCESSES THREADS: few workers (memory), no apparmor, no keep-alive
uwsgi_tune() {
  [ -f "$1.orig" ] || cp -a "$1" "$1.orig"
  sed -e "s/^processes = .*/processes = $2/" -e "s/^threads = .*/threads = $3/" \
      -e 's/^plugins = python3,apparmor/plugins = python3/' -e 's/^apparmor-profile/#apparmor-profile/' \
      "$1.orig" >"$1"
  # uwsgi's http-socket with client keep-alive gave sporadic "Connection reset by peer".
  echo 'add-header = Connection: close' >>"$1"
}

# run_as USER CMD: run a *-manage command as the service's user; its chatter goes to $WORK/manage.log
run_as() {
  local u=$1; shift
  echo "[$(date -u +%FT%TZ)] $u: $*" >>"$WORK/manage.log"
  su -s /bin/sh "$u" -c "$*" 2>>"$WORK/manage.log" || {
    tail -n 15 "$WORK/manage.log" >&2
    die "'$*' failed (log: $WORK/manage.log)"
  }
}

conf_base() {
  step "configure mariadb, rabbitmq (loopback only, small)"
  write_conf /etc/mysql/mariadb.conf.d/99-devcloud.cnf <<INI
# devcloud: loopback only, small buffers
[mysqld]
bind-address = 127.0.0.1
max_connections = 500
innodb_buffer_pool_size = 128M
innodb_flush_log_at_trx_commit = 2
skip-name-resolve
INI
  write_conf /etc/rabbitmq/rabbitmq-env.conf <<INI
# devcloud: loopback only; no scheduler busy-waiting (CPU is scarce here)
NODE_IP_ADDRESS=127.0.0.1
SERVER_ADDITIONAL_ERL_ARGS="+sbwt none +sbwtdcpu none +sbwtdio none"
INI
  # epmd (erlang's port mapper, started by rabbitmq) also on loopback only
  export ERL_EPMD_ADDRESS=127.0.0.1
}

conf_databases() {
  step "databases"
  local sql="" d
  for d in keystone glance placement nova nova_api nova_cell0 neutron; do
    sql+="CREATE DATABASE IF NOT EXISTS $d;"
    sql+="GRANT ALL ON $d.* TO 'openstack'@'localhost'; GRANT ALL ON $d.* TO 'openstack'@'127.0.0.1';"
  done
  mysql <<SQL
CREATE USER IF NOT EXISTS 'openstack'@'localhost' IDENTIFIED BY '$PW';
CREATE USER IF NOT EXISTS 'openstack'@'127.0.0.1' IDENTIFIED BY '$PW';
ALTER USER 'openstack'@'localhost' IDENTIFIED BY '$PW';
ALTER USER 'openstack'@'127.0.0.1' IDENTIFIED BY '$PW';
$sql
FLUSH PRIVILEGES;
SQL
}

conf_libvirt() {
  # No dbus/polkit here: access to libvirt's socket is by group permission only.
  [ -f /etc/libvirt/libvirtd.conf.orig ] || cp -a /etc/libvirt/libvirtd.conf /etc/libvirt/libvirtd.conf.orig
  sed -e 's/^#\?unix_sock_group = .*/unix_sock_group = "libvirt"/' \
      -e 's/^#\?unix_sock_rw_perms = .*/unix_sock_rw_perms = "0770"/' \
      -e 's/^#\?auth_unix_rw = .*/auth_unix_rw = "none"/' \
      -e 's/^#\?auth_unix_ro = .*/auth_unix_ro = "none"/' \
      /etc/libvirt/libvirtd.conf.orig >/etc/libvirt/libvirtd.conf
}

conf_keystone() {
  step "configure keystone"
  write_conf /etc/keystone/keystone.conf <<INI
[DEFAULT]
log_dir = /var/log/keystone
[database]
connection = mysql+pymysql://openstack:$PW@$IP/keystone
[token]
provider = fernet
[cache]
enabled = true
backend = dogpile.cache.memcached
memcache_servers = $IP:11211
INI
  # Every other service validates tokens here: two processes.
  uwsgi_tune /etc/keystone/keystone-uwsgi.ini 2 2
  run_as keystone keystone-manage db_sync
  # bootstrap and fernet setup run as root
  if [ ! -e /etc/keystone/fernet-keys/0 ]; then
    keystone-manage fernet_setup --keystone-user keystone --keystone-group keystone 2>>"$WORK/manage.log"
  fi
  if [ ! -e /etc/keystone/credential-keys/0 ]; then
    keystone-manage credential_setup --keystone-user keystone --keystone-group keystone 2>>"$WORK/manage.log"
  fi
  # Idempotent: creates or updates admin, the RegionOne region and keystone's own endpoints.
  keystone-manage bootstrap --bootstrap-password "$PW" --bootstrap-admin-url "$KS/v3/" \
    --bootstrap-internal-url "$KS/v3/" --bootstrap-public-url "$KS/v3/" --bootstrap-region-id "$REGION" \
    >/dev/null 2>>"$WORK/manage.log"
}

conf_glance() {
  step "configure glance"
  # Only the file store: an http store would let image locations point outside this machine.
  write_conf /etc/glance/glance-api.conf <<INI
[DEFAULT]
workers = 1
log_dir = /var/log/glance
[database]
connection = mysql+pymysql://openstack:$PW@$IP/glance
$(ini_authtoken glance)
[paste_deploy]
flavor = keystone
[glance_store]
stores = file
default_store = file
filesystem_store_datadir = /var/lib/glance/images/
[oslo_concurrency]
lock_path = /var/lib/glance/tmp
INI
  run_as glance glance-manage db_sync >/dev/null
}

conf_placement() {
  step "configure placement"
  write_conf /etc/placement/placement.conf <<INI
[DEFAULT]
[placement_database]
connection = mysql+pymysql://openstack:$PW@$IP/placement
[api]
auth_strategy = keystone
$(ini_authtoken placement)
INI
  uwsgi_tune /etc/placement/placement-api-uwsgi.ini 1 4
  run_as placement placement-manage db sync >/dev/null
}

conf_nova() {
  step "configure nova"
  # reserved_host_memory_mb: the services (about 3 GB) and whatever else runs here (image builds).
  # ram_allocation_ratio 1.0: emulated guests really use their RAM; over-commit would end in the
  # OOM killer rather than a clean "No valid host".
  write_conf /etc/nova/nova.conf <<INI
[DEFAULT]
transport_url = rabbit://guest:guest@$IP:5672/
my_ip = $IP
state_path = /var/lib/nova
log_dir = /var/log/nova
enabled_apis = osapi_compute
osapi_compute_workers = 1
metadata_workers = 1
# user-data reaches guests on a config drive: the flat network has no metadata service
force_config_drive = True
reserved_host_memory_mb = 4096
initial_ram_allocation_ratio = 1.0
initial_cpu_allocation_ratio = 16.0
initial_disk_allocation_ratio = 4.0
[api]
auth_strategy = keystone
[api_database]
connection = mysql+pymysql://openstack:$PW@$IP/nova_api
[database]
connection = mysql+pymysql://openstack:$PW@$IP/nova
$(ini_authtoken nova)
$(ini_client service_user nova)
send_service_user_token = true
$(ini_client placement placement)
$(ini_client neutron neutron)
# A call to Neutron that never answers (see neutron-api below) must fail, not hang the instance's
# operation forever: Nova then puts the instance in ERROR, and a DELETE again (the spawner's) finishes it.
timeout = 60
[glance]
region_name = $REGION
[cinder]
os_region_name = $REGION
[conductor]
workers = 1
[scheduler]
workers = 1
discover_hosts_in_cells_interval = 30
[vnc]
enabled = false
[spice]
enabled = false
[libvirt]
virt_type = $VIRT_TYPE
# host-passthrough/host-model fail on this machine's CPU (MSR 0x10a). Not none either: QEMU's default model
# (qemu64) lacks SSE4.2/POPCNT, and NumPy 2 (x86-64-v2 baseline) dies with SIGILL on import, so every kernel
# running numpy crashed. Nehalem is the x86-64-v2 baseline, which TCG emulates.
cpu_mode = custom
cpu_models = Nehalem
[oslo_concurrency]
lock_path = /var/lib/nova/tmp
[oslo_messaging_notifications]
driver = noop
[image_cache]
# Each image build is a new Glance image, and Nova keeps a raw copy of every image it booted (about
# 1.2 GiB each) in instances/_base: remove the copies no instance has used for an hour, checked every
# 10 minutes (Nova's defaults: a day, every 40 minutes).
manager_interval = 600
remove_unused_original_minimum_age_seconds = 3600
INI
  write_conf /etc/nova/nova-compute.conf <<INI
[DEFAULT]
compute_driver = libvirt.LibvirtDriver
[libvirt]
virt_type = $VIRT_TYPE
INI
  # Nova's API is meant for one thread per process (Debian's default: 16 processes x 1 thread);
  # with 1 process x 4 threads, one of 4 concurrent server creates hung until the client's timeout.
  uwsgi_tune /etc/nova/nova-api-uwsgi.ini 2 1
  run_as nova nova-manage api_db sync >/dev/null
  run_as nova nova-manage cell_v2 map_cell0 >/dev/null
  run_as nova nova-manage cell_v2 list_cells | has ' cell1 ' || run_as nova nova-manage cell_v2 create_cell --name=cell1 >/dev/null
  run_as nova nova-manage db sync >/dev/null
}

conf_neutron() {
  step "configure neutron (ML2 linuxbridge, flat physnet1 on $PHY)"
  write_conf /etc/neutron/neutron.conf <<INI
[DEFAULT]
core_plugin = ml2
service_plugins =
auth_strategy = keystone
transport_url = rabbit://guest:guest@$IP:5672/
notify_nova_on_port_status_changes = true
notify_nova_on_port_data_changes = true
api_workers = 1
rpc_workers = 1
rpc_state_report_workers = 1
state_path = /var/lib/neutron
log_dir = /var/log/neutron
[database]
connection = mysql+pymysql://openstack:$PW@$IP/neutron
$(ini_authtoken neutron)
$(ini_client nova nova)
[oslo_concurrency]
lock_path = /var/lib/neutron/tmp
[agent]
root_helper = sudo neutron-rootwrap /etc/neutron/rootwrap.conf
[experimental]
# Debian's neutron calls linuxbridge experimental
linuxbridge = true
INI
  write_conf /etc/neutron/plugins/ml2/ml2_conf.ini <<INI
[ml2]
type_drivers = flat
tenant_network_types =
mechanism_drivers = linuxbridge
extension_drivers = port_security
[ml2_type_flat]
flat_networks = physnet1
INI
  # bridge_mappings to a bridge made by hand does not work (os-vif plugs VMs into brq<netid>):
  # map the physical network to one end of the veth pair instead.
  write_conf /etc/neutron/plugins/ml2/linuxbridge_agent.ini <<INI
[linux_bridge]
physical_interface_mappings = physnet1:$PHY
[vxlan]
enable_vxlan = false
[securitygroup]
enable_security_group = true
firewall_driver = $(firewall_driver)
INI
  write_conf /etc/neutron/dhcp_agent.ini <<INI
[DEFAULT]
interface_driver = linuxbridge
dhcp_driver = neutron.agent.linux.dhcp.Dnsmasq
enable_isolated_metadata = false
INI
  # Like nova-api: one thread per process. With threads, neutron-api's eventlet code is entered from
  # several OS threads ("greenlet.error: cannot switch to a different thread" in its log, 171 times in one
  # day here); once, a port DELETE never answered and nova-compute waited on it forever, leaving the
  # instance in "deleting" until nova-compute restarted.
  uwsgi_tune /etc/neutron/neutron-api-uwsgi.ini 2 1
  run_as neutron "neutron-db-manage --config-file /etc/neutron/neutron.conf \
    --config-file /etc/neutron/plugins/ml2/ml2_conf.ini upgrade head" >/dev/null
}

# firewall_driver: iptables (security groups enforced) when bridged traffic passes netfilter,
# else noop (security group rules exist in the API but nothing filters).
firewall_driver() {
  if [ "${DEVCLOUD_FIREWALL:-auto}" = noop ]; then echo noop; return; fi
  modprobe br_netfilter 2>/dev/null || true
  if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] && iptables -S >/dev/null 2>&1; then
    echo iptables
  else
    echo noop
  fi
}
