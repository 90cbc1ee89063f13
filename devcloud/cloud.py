#!/usr/bin/python3
"""The dev cloud's OpenStack-side set-up, health checks and reset, through openstacksdk.

Runs on Debian's /usr/bin/python3 (python3-openstacksdk, installed with the cloud), never on the
project's venv. Called by devcloud.sh; settings come from the environment (see lib/common.sh):

    cloud.py catalog    projects, users, roles, services and endpoints in Keystone
    cloud.py resources  flat network, flavors, security groups, the 'blank' image, volume quotas;
                        published image builds beyond the newest DEVCLOUD_KEEP_IMAGES deleted
    cloud.py health [all|services] [json|tsv]  one line per API-level check (exit 1 when one fails)
    cloud.py reset      delete every server and volume of the jupyter project, re-create network and flavors
    cloud.py facts      what clients need (JSON): auth URL, names, ids, flavors, images

Everything is idempotent: what exists and is right is left alone.
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import openstack

E = os.environ
PW = E.get("DEVCLOUD_PASSWORD", "secret")
JUPYTER_PW = E.get("DEVCLOUD_JUPYTER_PASSWORD", PW)
KS = E.get("KS", "http://127.0.0.1:5000")
REGION = E.get("REGION", "RegionOne")
NET_NAME = E.get("NET_NAME", "flatnet")
NET_CIDR = E.get("NET_CIDR", "10.99.0.0/24")
HOST_IP = E.get("HOST_IP", "10.99.0.1")
WORK = E.get("WORK", "/var/tmp/devcloud")
# Ports the host (the hub and its proxy, tests over SSH) reaches on every VM: SSH, the single-user
# server's port as the spawner configures it (8000), jupyter's default 8888, and the warm pool's agent (9443).
GUEST_PORTS = [int(p) for p in E.get("DEVCLOUD_GUEST_PORTS", "22 8000 8888 9443").split()]
PROJECT = "jupyter"
# Published image builds kept in Glance (`resources` deletes older ones that no server uses)
KEEP_IMAGES = int(E.get("DEVCLOUD_KEEP_IMAGES", "3"))
USER = "jupyter"
# The group the spawner's VMs get (`security_groups` in the example hub configuration): the guest ports
# open from the host only, and no rule for the group itself, so that one user's VM cannot reach another's.
SERVER_GROUP = E.get("DEVCLOUD_SERVER_GROUP", "jupyter-server")

# name: (vCPUs, RAM MiB, disk GiB). j1.* fit the project's Jupyter image (8 GiB disk);
# m1.* are for tiny test guests.
FLAVORS = {
    "j1.small": (2, 2048, 8),
    "j1.tiny": (1, 1024, 8),
    "m1.tiny": (1, 256, 1),
    "m1.small": (1, 512, 2),
}

# service name: (type, URL) for the catalog; keystone's own entries come from keystone-manage
CATALOG = {
    "glance": ("image", "http://127.0.0.1:9292"),
    "placement": ("placement", "http://127.0.0.1:8778"),
    "nova": ("compute", "http://127.0.0.1:8774/v2.1"),
    "neutron": ("network", "http://127.0.0.1:9696"),
    "cinder": ("volumev3", "http://127.0.0.1:8776/v3/%(project_id)s"),
}

# The jupyter project's block storage quota: a volume per user server and some to spare; the gigabytes are
# the Ceph OSD's size (DEVCLOUD_CEPH_GIB, a sparse file: thin volumes take only what is written).
VOLUME_QUOTA = {
    "volumes": 20,
    "gigabytes": int(E.get("DEVCLOUD_CEPH_GIB", "32")),
    "snapshots": 10,
    "backups": 0,
    "backup_gigabytes": 0,
}
# HEALTH_WARN codes that a one-OSD cluster shows and that do not keep volumes from working
CEPH_ACCEPTED_WARNINGS = {
    "POOL_NO_REDUNDANCY": "one OSD: every pool has a single copy (by design here)",
    "TOO_FEW_OSDS": "one OSD, fewer than a production pool's size (by design here)",
    "RECENT_CRASH": "a daemon crashed once and was restarted ('ceph crash archive-all' clears it)",
}


def log(msg):
    print("[cloud.py] " + msg, flush=True)


def connect(project="admin", user="admin", password=PW, deadline_s=120):
    """A connection that has answered once; Keystone may still be starting."""
    end = time.monotonic() + deadline_s
    while True:
        conn = openstack.connect(
            auth_url=KS + "/v3",
            username=user,
            password=password,
            project_name=project,
            user_domain_name="Default",
            project_domain_name="Default",
            region_name=REGION,
            identity_api_version="3",
        )
        try:
            conn.authorize()
            return conn
        except Exception as exc:  # keystone starting, DB not yet reachable...
            if time.monotonic() > end:
                raise SystemExit(f"keystone at {KS} does not accept {user}@{project}: {exc}") from None
            time.sleep(2)


def wait_for(what, check, deadline_s, every_s=2):
    end = time.monotonic() + deadline_s
    while True:
        try:
            result = check()
        except Exception as exc:  # a service still starting answers 5xx or resets
            result, last = None, exc
        else:
            last = None
        if result:
            return result
        if time.monotonic() > end:
            raise SystemExit(f"timed out after {deadline_s}s waiting for {what}" + (f" ({last})" if last else ""))
        time.sleep(every_s)


# --- catalog ------------------------------------------------------------------------------------


def catalog():
    """Projects, users, roles, services and endpoints; few API calls (Keystone is slow when just started)."""
    conn = connect()
    idn = conn.identity
    dom = idn.find_domain("default")
    roles = {r.name: r for r in idn.roles()}
    for name in ("member", "reader", "service"):
        if name not in roles:
            roles[name] = idn.create_role(name=name)
    projects = {p.name: p for p in idn.projects(domain_id=dom.id)}
    users = {u.name: u for u in idn.users(domain_id=dom.id)}

    def project(name):
        if name not in projects:
            projects[name] = idn.create_project(name=name, domain_id=dom.id)
        return projects[name]

    def user(name, password, proj, role_names):
        u = users.get(name)
        if u is None:
            u = idn.create_user(name=name, password=password, domain_id=dom.id, default_project_id=proj.id)
        else:
            idn.update_user(u, password=password)  # the password may have changed
        for r in role_names:
            idn.assign_project_role_to_user(proj, u, roles[r])  # a PUT: idempotent

    service_project = project("service")
    user(USER, JUPYTER_PW, project(PROJECT), ["member", "reader"])
    services = {s.type: s for s in idn.services()}
    endpoints = list(idn.endpoints())
    for name, (typ, url) in CATALOG.items():
        user(name, PW, service_project, ["admin", "service"])
        svc = services.get(typ) or idn.create_service(name=name, type=typ)
        for iface in ("public", "internal", "admin"):
            eps = [e for e in endpoints if e.service_id == svc.id and e.interface == iface and e.region_id == REGION]
            if not eps:
                idn.create_endpoint(service_id=svc.id, interface=iface, url=url, region_id=REGION)
            elif eps[0].url != url:
                idn.update_endpoint(eps[0], url=url)
    log("keystone: projects, users, roles, catalog ok")


# --- resources ----------------------------------------------------------------------------------


def ensure_network(conn):
    net = conn.network.find_network(NET_NAME)
    if net is None:
        net = conn.network.create_network(
            name=NET_NAME,
            is_shared=True,
            provider_network_type="flat",
            provider_physical_network="physnet1",
        )
    if not list(conn.network.subnets(network_id=net.id)):
        # No gateway and no DNS server: guests reach the host on-link (10.99.0.1) and nothing else.
        conn.network.create_subnet(
            name=NET_NAME + "-v4",
            network_id=net.id,
            ip_version=4,
            cidr=NET_CIDR,
            gateway_ip=None,
            allocation_pools=[{"start": "10.99.0.100", "end": "10.99.0.250"}],
            dns_nameservers=[],
            enable_dhcp=True,
        )
    # The first VM can boot before dnsmasq serves and get no lease: wait for the DHCP port.
    wait_for(
        "the DHCP port of " + NET_NAME,
        lambda: any(p.status == "ACTIVE" for p in conn.network.ports(network_id=net.id, device_owner="network:dhcp")),
        deadline_s=180,
    )
    return net


def ensure_flavors(conn):
    for name, (vcpus, ram, disk) in FLAVORS.items():
        f = conn.compute.find_flavor(name)
        if f is not None and (f.vcpus, f.ram, f.disk) != (vcpus, ram, disk):
            conn.compute.delete_flavor(f)  # servers keep a copy of their flavor: safe
            f = None
        if f is None:
            conn.compute.create_flavor(name=name, vcpus=vcpus, ram=ram, disk=disk, is_public=True)


def ensure_security_rules():
    """Let the host reach SSH and the single-user server ports of the jupyter project's VMs: in the project's
    'default' group (what Packer's build instances get) and in SERVER_GROUP (what the spawner's VMs get)."""
    conn = connect(PROJECT, USER, JUPYTER_PW)
    # Listing as the project makes Neutron create the project's 'default' group if needed.
    groups = [g for g in conn.network.security_groups(name="default") if g.project_id == conn.current_project_id]
    open_guest_ports_to_host(conn, groups[0])
    open_guest_ports_to_host(conn, ensure_server_group(conn))


def ensure_server_group(conn):
    """SERVER_GROUP, with no ingress rule but the host's (Neutron gives a new group egress rules only). A rule
    that lets anything else in (another group, another address) is removed."""
    found = [g for g in conn.network.security_groups(name=SERVER_GROUP) if g.project_id == conn.current_project_id]
    sg = found[0] if found else conn.network.create_security_group(
        name=SERVER_GROUP, description="jupyter servers: the guest ports from the hub's host only"
    )  # fmt: skip
    for r in conn.network.security_group_rules(security_group_id=sg.id, direction="ingress"):
        if r.remote_group_id or r.remote_ip_prefix != HOST_IP + "/32":
            conn.network.delete_security_group_rule(r)
    return sg


def open_guest_ports_to_host(conn, sg) -> None:
    have = {
        (r.protocol, r.port_range_min, r.remote_ip_prefix)
        for r in conn.network.security_group_rules(security_group_id=sg.id, direction="ingress")
    }
    wanted = [("tcp", p) for p in GUEST_PORTS] + [("icmp", None)]
    for proto, port in wanted:
        if (proto, port, HOST_IP + "/32") in have:
            continue
        conn.network.create_security_group_rule(
            security_group_id=sg.id,
            direction="ingress",
            ethertype="IPv4",
            protocol=proto,
            port_range_min=port,
            port_range_max=port,
            remote_ip_prefix=HOST_IP + "/32",
        )


def ensure_blank_image(conn):
    """'blank': a 1 GiB empty disk. Boots to 'no bootable device'; good for never-ready spawns."""
    img = conn.image.find_image("blank")
    if img is not None and img.status == "active":
        return
    if img is not None:
        conn.image.delete_image(img)
    path = os.path.join(WORK, "blank.qcow2")
    if not os.path.exists(path):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, "1G"], check=True)
    conn.image.create_image(
        name="blank",
        filename=path,
        disk_format="qcow2",
        container_format="bare",
        visibility="public",
        wait=True,
    )


def ensure_volume_quotas(conn):
    """The jupyter project's Cinder quotas (set only when they differ)."""
    proj = conn.identity.find_project(PROJECT, domain_id="default")
    path = f"/os-quota-sets/{proj.id}"
    have = conn.block_storage.get(path).json()["quota_set"]
    if any(have.get(k) != v for k, v in VOLUME_QUOTA.items()):
        conn.block_storage.put(path, json={"quota_set": VOLUME_QUOTA}).raise_for_status()


def prune_images(conn, keep=KEEP_IMAGES):
    """Delete the project's published builds (images with an lcs_git_commit property) except the newest
    `keep` and any image a server still uses: each e2e run publishes one, and Glance would keep them all."""
    builds = sorted(
        (i for i in conn.image.images() if "lcs_git_commit" in (i.properties or {})),
        key=lambda i: i.created_at or "",
        reverse=True,
    )
    in_use = {(s.image or {}).get("id") for s in conn.compute.servers(all_projects=True)}
    for img in builds[keep:]:
        if img.id not in in_use:
            conn.image.delete_image(img, ignore_missing=True)
            log(f"deleted image {img.name} ({img.id}, {img.created_at}): older than the newest {keep} builds")


def resources():
    conn = connect()
    t0 = time.monotonic()
    ensure_network(conn)
    ensure_flavors(conn)
    ensure_security_rules()
    ensure_blank_image(conn)
    ensure_volume_quotas(conn)
    prune_images(conn)
    log(f"network {NET_NAME}, flavors, security rules, image 'blank', volume quotas ok ({time.monotonic() - t0:.1f}s)")


# --- health -------------------------------------------------------------------------------------


def health(scope="all", fmt="json"):
    """API-level checks, one line each: JSON {"name", "ok", "detail"}, or fmt "tsv": name TAB OK|BROKEN TAB detail.

    scope "services": only what the services themselves report (not the network and flavors
    that `resources` creates).
    """

    def emit(r):
        if fmt == "tsv":
            print("\t".join([r["name"], "OK" if r["ok"] else "BROKEN", " ".join(r["detail"].split())]))
        else:
            print(json.dumps(r))

    results = []

    def check(name, fn):
        try:
            ok, detail = fn()
        except Exception as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"[:300]
        results.append({"name": name, "ok": bool(ok), "detail": detail})

    try:
        conn = connect(deadline_s=0)
    except SystemExit as exc:
        emit({"name": "keystone", "ok": False, "detail": str(exc)[:300]})
        return 1
    results.append({"name": "keystone", "ok": True, "detail": "token issued"})

    def compute_service(binary):
        def fn():
            svcs = [s for s in conn.compute.services() if s.binary == binary]
            if not svcs:
                return False, "not registered"
            s = svcs[0]
            return s.state == "up" and s.status == "enabled", f"state {s.state}, {s.status}"

        return fn

    def agent(agent_type):
        def fn():
            agents = list(conn.network.agents(agent_type=agent_type))
            if not agents:
                return False, "not registered"
            a = agents[0]
            return a.is_alive and a.is_admin_state_up, "alive" if a.is_alive else "not alive (no heartbeat)"

        return fn

    def hypervisor():
        hvs = list(conn.compute.hypervisors())
        return bool(hvs), f"{len(hvs)} hypervisor(s)"

    def placement():
        rps = conn.placement.resource_providers()
        n = len(list(rps))
        return n > 0, f"{n} resource provider(s)"

    def api(url):
        def fn():
            try:
                with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 (the dev cloud's http:// URLs)
                    code = r.status
            except urllib.error.HTTPError as exc:  # version documents answer 300 Multiple Choices
                code = exc.code
            return code < 500, f"{url} answers {code}"

        return fn

    def volume_service(binary):
        def fn():
            svcs = [s for s in conn.block_storage.get("/os-services").json()["services"] if s["binary"] == binary]
            if not svcs:
                return False, "not registered"
            down = [s["host"] for s in svcs if s["state"] != "up" or s["status"] != "enabled"]
            if down:
                return False, f"{', '.join(down)} down or disabled (log: /var/log/cinder/{binary}.log)"
            return True, f"{len(svcs)} up"

        return fn

    def images():
        n = len(list(conn.image.images()))
        return True, f"{n} image(s)"

    def network():
        net = conn.network.find_network(NET_NAME)
        if net is None:
            return False, f"network {NET_NAME} missing (run: invoke devcloud reset)"
        dhcp = list(conn.network.ports(network_id=net.id, device_owner="network:dhcp"))
        ok = any(p.status == "ACTIVE" for p in dhcp)
        return ok, "DHCP port ACTIVE" if ok else f"DHCP port {[p.status for p in dhcp]}"

    def flavors():
        have = {f.name for f in conn.compute.flavors()}
        missing = sorted(set(FLAVORS) - have)
        return not missing, "missing " + ", ".join(missing) if missing else ", ".join(sorted(FLAVORS))

    check("nova-api", api("http://127.0.0.1:8774/"))
    check("neutron-api", api("http://127.0.0.1:9696/"))
    check("glance-api", images)
    check("placement-api", placement)
    check("nova-conductor", compute_service("nova-conductor"))
    check("nova-scheduler", compute_service("nova-scheduler"))
    check("nova-compute", compute_service("nova-compute"))
    check("hypervisor", hypervisor)
    check("neutron-linuxbridge-agent", agent("Linux bridge agent"))
    check("neutron-dhcp-agent", agent("DHCP agent"))
    check("cinder-api", api("http://127.0.0.1:8776/"))
    check("cinder-scheduler", volume_service("cinder-scheduler"))
    check("cinder-volume", volume_service("cinder-volume"))
    check("ceph", ceph_health)
    if scope == "all":
        check("network " + NET_NAME, network)
        check("flavors", flavors)
    for r in results:
        emit(r)
    return 0 if all(r["ok"] for r in results) else 1


def ceph_health():
    """(ok, detail) from `ceph health detail`: HEALTH_OK, or HEALTH_WARN with only the warnings a one-OSD
    cluster shows by design (each explained); anything else names its checks and where to look."""
    try:
        out = subprocess.run(
            ["ceph", "--connect-timeout", "10", "health", "detail", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        return False, (
            f"the monitor does not answer ({type(exc).__name__}; log: /var/log/ceph/ceph-mon.a.log);"
            " fix: invoke devcloud up"
        )
    report = json.loads(out)
    status, checks = report.get("status"), report.get("checks") or {}
    if status == "HEALTH_OK":
        return True, "HEALTH_OK"
    unexplained = {k: v for k, v in checks.items() if k not in CEPH_ACCEPTED_WARNINGS}
    if status == "HEALTH_WARN" and not unexplained:
        return True, "HEALTH_WARN accepted: " + "; ".join(f"{k}: {CEPH_ACCEPTED_WARNINGS[k]}" for k in checks)
    summary = "; ".join(f"{k}: {v.get('summary', {}).get('message', '')}" for k, v in unexplained.items())
    return False, (
        f"{status}: {summary} (ceph health detail; logs /var/log/ceph/); fix: invoke devcloud up, or"
        " devcloud.sh restart ceph-osd|ceph-mgr|ceph-mon"
    )


# --- reset --------------------------------------------------------------------------------------


def reset():
    conn = connect()
    proj = conn.identity.find_project(PROJECT, domain_id="default")
    servers = list(conn.compute.servers(all_projects=True, project_id=proj.id)) if proj else []
    for s in servers:
        log(f"delete server {s.name} ({s.id}, {s.status})")
        conn.compute.delete_server(s, force=True)
    if servers:
        wait_for(
            "servers of project jupyter to be gone",
            lambda: not list(conn.compute.servers(all_projects=True, project_id=proj.id)),
            deadline_s=180,
        )
    deleted_volumes = delete_volumes(conn, proj)
    net = conn.network.find_network(NET_NAME)
    if net is not None:
        # ports of just-deleted servers go a moment after the servers
        wait_for(
            "compute ports to be gone",
            lambda: (
                not [p for p in conn.network.ports(network_id=net.id) if (p.device_owner or "").startswith("compute:")]
            ),
            deadline_s=120,
        )
        log(f"delete network {NET_NAME}")
        conn.network.delete_network(net)
    for name in FLAVORS:
        f = conn.compute.find_flavor(name)
        if f is not None:
            conn.compute.delete_flavor(f)
    ensure_network(conn)
    ensure_flavors(conn)
    ensure_security_rules()
    log(
        f"reset done: {len(servers)} server(s) and {deleted_volumes} volume(s) deleted,"
        f" {NET_NAME} and flavors re-created"
    )


def delete_volumes(conn, proj):
    """Delete every volume of the project (its servers are gone, so none is attached); returns how many."""
    if proj is None:
        return 0

    def volumes():
        return conn.block_storage.get(f"/volumes?all_tenants=1&project_id={proj.id}").json()["volumes"]

    found = volumes()
    for v in found:
        log(f"delete volume {v['name']} ({v['id']})")
        # force: also a volume stuck in 'error', 'attaching' or 'detaching'
        conn.block_storage.post(f"/volumes/{v['id']}/action", json={"os-force_delete": {}})
    if found:
        wait_for("volumes of project jupyter to be gone", lambda: not volumes(), deadline_s=180)
    return len(found)


# --- facts --------------------------------------------------------------------------------------


def facts():
    conn = connect(PROJECT, USER, JUPYTER_PW)
    net = conn.network.find_network(NET_NAME)
    print(
        json.dumps(
            {
                "auth_url": KS,
                "auth_version": "3.x_password",
                "region": REGION,
                "project": PROJECT,
                "project_domain": "default",
                "user": USER,
                "user_domain": "default",
                "password_env": "DEVCLOUD_JUPYTER_PASSWORD",
                "network": NET_NAME,
                "network_id": net.id if net else None,
                "network_cidr": NET_CIDR,
                "host_ip": HOST_IP,
                "hub_connect_url": f"http://{HOST_IP}:8081",
                "guest_ports_open_from_host": GUEST_PORTS,
                "server_security_group": SERVER_GROUP,
                "flavors": {n: {"vcpus": v, "ram_mib": r, "disk_gib": d} for n, (v, r, d) in FLAVORS.items()},
                "images": sorted(i.name for i in conn.image.images()),
                "virt_type": E.get("VIRT_TYPE", "qemu"),
                "block_storage": {
                    "service_type": "volumev3",
                    "backend": "ceph-rbd",
                    "volume_type": "__DEFAULT__",
                    "quota": VOLUME_QUOTA,
                },
            },
            indent=2,
        )
    )


def main(argv):
    cmds = {"catalog": catalog, "resources": resources, "health": health, "reset": reset, "facts": facts}
    if len(argv) < 2 or argv[1] not in cmds:
        print(__doc__, file=sys.stderr)
        return 2
    # openstacksdk logs a warning per deprecated option; keep the output readable
    openstack.enable_logging(debug=False)
    return cmds[argv[1]](*argv[2:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
