# shellcheck shell=bash disable=SC2034  # the settings are used by devcloud.sh
# Block storage: a single-node Ceph (one mon, one mgr, one OSD whose BlueStore lives in a sparse file)
# and Cinder with its RBD driver in front of it. Nova's libvirt attaches the volumes through QEMU's
# librbd (qemu-block-extra), authenticated as client.cinder with a libvirt secret. Nothing here needs
# a kernel module: no krbd, no iSCSI, no device-mapper (none of them exists on this kind of machine).
# Sourced by devcloud.sh after configure.sh and services.sh; configured on a stamp of its own, so that a
# change here restarts only Ceph and Cinder, never Nova or Neutron.

CEPH_CONF=/etc/ceph/ceph.conf
CEPH_DATA=/var/lib/ceph
# Fixed identities: the cluster's fsid, and the libvirt secret that Cinder names in every attachment.
CEPH_FSID=cac3b365-f6d5-4efc-a42b-94dcac8d4091
CINDER_SECRET_UUID=f1067105-c564-48df-88b5-2bf0bb763da8
CEPH_POOL=volumes
# The OSD's size in GiB: a sparse file (only what is written takes disk space). The jupyter project's
# volume quota in gigabytes is the same number.
CEPH_GIB=${DEVCLOUD_CEPH_GIB:-32}
STORAGE_STAMP_FILE=$WORK/storage.stamp

# ceph ARGS: the ceph CLI as client.admin, never waiting for a dead monitor for long
ceph_cli() { timeout 30 ceph --connect-timeout 10 "$@"; }

conf_ceph() {
  install -d -o ceph -g ceph /run/ceph /var/log/ceph
  write_conf "$CEPH_CONF" <<INI
# devcloud: one node, one replica, everything on loopback
[global]
fsid = $CEPH_FSID
mon initial members = a
mon host = [v2:$IP:3300,v1:$IP:6789]
public addr = $IP
cluster addr = $IP
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
# one OSD: a single copy of every object, placement groups on one host
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
# The host disk is shared with images and guests, and its free share says little about what the monitor
# needs (a store of tens of MiB). Ceph's defaults (warn at 30% free, refuse to start or run at 5%) stop
# the monitor on a large disk that still has gigabytes free; devcloud.sh checks free space in GiB itself.
mon data avail warn = 2
mon data avail crit = 1
pid file = /run/ceph/\$name.pid
[mgr]
keyring = \$mgr_data/keyring
mgr initial modules = iostat
[osd]
keyring = \$osd_data/keyring
osd objectstore = bluestore
bluestore block path = \$osd_data/block.file
bluestore block create = true
bluestore block size = $((CEPH_GIB * 1024 * 1024 * 1024))
# the smallest cache target Ceph accepts (idle the OSD uses far less)
osd memory target = 939524096
INI
  chmod 0644 "$CEPH_CONF"
}

# ceph_bootstrap: the monitor's, manager's and OSD's data and keys, once (as Ceph's vstart.sh does)
ceph_bootstrap() {
  local mon=$CEPH_DATA/mon/ceph-a mgr=$CEPH_DATA/mgr/ceph-x osd=$CEPH_DATA/osd/ceph-0 tmp
  if [ ! -e "$mon/done" ]; then
    step "ceph: create the monitor"
    tmp=$(mktemp -d)
    rm -rf "$mon"
    ceph-authtool --create-keyring "$tmp/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    if [ ! -s /etc/ceph/ceph.client.admin.keyring ]; then
      ceph-authtool --create-keyring /etc/ceph/ceph.client.admin.keyring --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
    fi
    ceph-authtool "$tmp/mon.keyring" --import-keyring /etc/ceph/ceph.client.admin.keyring >/dev/null
    monmaptool --create --fsid "$CEPH_FSID" --addv a "[v2:$IP:3300,v1:$IP:6789]" "$tmp/monmap" >/dev/null
    install -d -o ceph -g ceph "$mon"
    ceph-mon --mkfs -i a --monmap "$tmp/monmap" --keyring "$tmp/mon.keyring" >>"$WORK/ceph-mon.start.log" 2>&1 ||
      die "ceph-mon --mkfs failed (log: $WORK/ceph-mon.start.log)"
    rm -rf "$tmp"
    chown -R ceph:ceph "$mon"
    touch "$mon/done"
  fi
  ceph_logs_to_ceph
  start_one ceph-mon
  retry 30 1 ceph_cli -s >/dev/null 2>&1 || die "ceph-mon does not answer (log: $(daemon_log ceph-mon))"
  if [ ! -s "$mgr/keyring" ]; then
    install -d -o ceph -g ceph "$mgr"
    ceph_cli auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' >"$mgr/keyring"
    chown -R ceph:ceph "$mgr"
  fi
  # the manager loads its Python modules for about 10 s: start it now, beside the OSD's creation
  start_one ceph-mgr
  if [ ! -e "$osd/ready" ]; then
    step "ceph: create the OSD (BlueStore in a ${CEPH_GIB} GiB sparse file)"
    local uuid secret
    uuid=$(uuidgen)
    secret=$(ceph-authtool --gen-print-key)
    rm -rf "$osd"
    # an OSD whose creation was interrupted: forget it (monitor commands; 'osd purge' would wait for the mgr)
    if ceph_cli osd ls | has -x 0; then
      ceph_cli osd crush remove osd.0 >/dev/null 2>&1 || true
      ceph_cli auth del osd.0 >/dev/null 2>&1 || true
      ceph_cli osd rm 0 >/dev/null
    fi
    echo "{\"cephx_secret\": \"$secret\"}" | ceph_cli osd new "$uuid" 0 -i - >/dev/null ||
      die "'ceph osd new' failed (log: $(daemon_log ceph-mon))"
    install -d -o ceph -g ceph "$osd"
    ceph-authtool --create-keyring "$osd/keyring" --name osd.0 --add-key "$secret" >/dev/null
    # "_read_bdev_label failed" and "unparsable uuid" in this log are expected for a new OSD
    ceph-osd -i 0 --mkfs --osd-uuid "$uuid" >>"$WORK/ceph-osd.start.log" 2>&1 ||
      die "ceph-osd --mkfs failed (log: $WORK/ceph-osd.start.log)"
    chown -R ceph:ceph "$osd"
    touch "$osd/ready"
  fi
  ceph_logs_to_ceph
}

# ceph_logs_to_ceph: the daemons run as ceph; a log file that a --mkfs run as root created stays
# unwritable to them, and they then log nothing at all
ceph_logs_to_ceph() {
  find /var/log/ceph -maxdepth 1 -name '*.log' ! -user ceph -exec chown ceph:ceph {} +
}

# ceph_pool_and_keys: the volumes pool, client.cinder's key, and the libvirt secret that holds it
ceph_pool_and_keys() {
  if ! ceph_cli osd pool ls | has -x "$CEPH_POOL"; then
    ceph_cli osd pool create "$CEPH_POOL" 16 16 >/dev/null 2>&1
    retry 3 2 timeout 60 rbd pool init "$CEPH_POOL" || die "rbd pool init $CEPH_POOL failed"
  fi
  local keyring=/etc/ceph/ceph.client.cinder.keyring key
  ceph_cli auth get-or-create client.cinder mon 'profile rbd' osd "profile rbd pool=$CEPH_POOL" \
    mgr "profile rbd pool=$CEPH_POOL" >"$keyring.tmp"
  chown root:cinder "$keyring.tmp"
  chmod 0640 "$keyring.tmp"
  mv "$keyring.tmp" "$keyring"
  key=$(ceph_cli auth get-key client.cinder)
  if [ "$(virsh -c qemu:///system secret-get-value "$CINDER_SECRET_UUID" 2>/dev/null)" != "$key" ]; then
    local xml
    xml=$(mktemp)
    cat >"$xml" <<XML
<secret ephemeral='no' private='no'>
  <uuid>$CINDER_SECRET_UUID</uuid>
  <usage type='ceph'><name>client.cinder secret</name></usage>
</secret>
XML
    virsh -c qemu:///system secret-define "$xml" >/dev/null
    rm -f "$xml"
    virsh -c qemu:///system secret-set-value "$CINDER_SECRET_UUID" --base64 "$key" >/dev/null 2>&1
  fi
}

# ceph_up: configure, create (first time) and start Ceph; the pool and keys when they are missing
ceph_up() {
  step "ceph: mon, mgr, osd; pool $CEPH_POOL; client.cinder key and libvirt secret"
  local s
  local before
  before=$(cat "$CEPH_CONF" 2>/dev/null || true)
  conf_ceph
  if [ "$before" != "$(cat "$CEPH_CONF")" ]; then
    for s in "${CEPH_SERVICES[@]}"; do stop_one "$s"; done
  fi
  ceph_bootstrap
  for s in "${CEPH_SERVICES[@]}"; do start_one "$s"; done
  retry 60 1 ceph_osd_up || die "ceph-osd is not up after 60s (log: $(daemon_log ceph-osd))"
  ceph_pool_and_keys
}

ceph_osd_up() { ceph_cli osd dump 2>/dev/null | has '^osd\.0 up '; }

conf_cinder() {
  step "configure cinder (RBD backend, pool $CEPH_POOL)"
  mysql <<SQL
CREATE DATABASE IF NOT EXISTS cinder;
GRANT ALL ON cinder.* TO 'openstack'@'localhost'; GRANT ALL ON cinder.* TO 'openstack'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
  write_conf /etc/cinder/cinder.conf <<INI
[DEFAULT]
transport_url = rabbit://guest:guest@$IP:5672/
auth_strategy = keystone
my_ip = $IP
state_path = /var/lib/cinder
log_dir = /var/log/cinder
glance_api_servers = http://$IP:9292
enabled_backends = ceph
osapi_volume_workers = 1
[database]
connection = mysql+pymysql://openstack:$PW@$IP/cinder
$(ini_authtoken cinder)
$(ini_client nova nova)
[ceph]
volume_driver = cinder.volume.drivers.rbd.RBDDriver
volume_backend_name = ceph
rbd_ceph_conf = $CEPH_CONF
rbd_pool = $CEPH_POOL
rbd_user = cinder
# Nova's libvirt finds the key in this libvirt secret (defined by devcloud.sh)
rbd_secret_uuid = $CINDER_SECRET_UUID
rados_connect_timeout = 10
report_discard_supported = true
[oslo_concurrency]
lock_path = /var/lib/cinder/tmp
[oslo_messaging_notifications]
driver = noop
INI
  uwsgi_tune /etc/cinder/cinder-api-uwsgi.ini 1 1
  run_as cinder cinder-manage db sync >/dev/null
}

# storage_stamp: changes whenever what conf_cinder and conf_ceph write changes
storage_stamp() {
  { grep -hv '^[[:space:]]*#' "$HERE/lib/storage.sh"; echo "$PW $CEPH_GIB"; } | sha256sum | cut -d' ' -f1
}

