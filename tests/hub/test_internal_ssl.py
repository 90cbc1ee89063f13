"""JupyterHub's internal_ssl with LibcloudSpawner, against the OpenStack API double: a real hub and proxy with
``internal_ssl = True``; the server's VM boots on a Neutron port created first, its certificate names the port's
address, the hub and the proxy reach it over https, the port goes with the server, and a failed start leaves no
port behind."""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509

from testkit.hub import Hub, cloud_servers, original_config, spawn_ready
from testkit.localhost import free_port
from testkit.wait import wait_until

HUB_ID = "hubtier"  # testkit.hub sets it
DESCRIPTION = f"jupyterhub-managed-by=libcloudspawner jupyterhub-hub-id={HUB_ID}"
KEY = "/etc/jupyterhub-singleuser/ssl/server.key"
CERT = "/etc/jupyterhub-singleuser/ssl/server.crt"


def tls_config(h: Hub) -> str:
    """The hub's own URLs are https with internal_ssl (its API, the proxy's API)."""
    return f"""
c.JupyterHub.internal_ssl = True
c.JupyterHub.internal_certs_location = {str(h.workdir / "internal-ssl")!r}
c.JupyterHub.trusted_alt_names = ['DNS:hub.internal.example']
c.JupyterHub.hub_bind_url = 'https://127.0.0.1:{h.hub_port}'
c.ConfigurableHTTPProxy.api_url = 'https://127.0.0.1:{h.proxy_api_port}'
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory, double):
    workdir = tmp_path_factory.mktemp("tls") / "hub"
    workdir.mkdir()
    h = Hub(workdir, double, {**original_config(double.url), "security_groups": ["default"]})
    h.extra_config = tls_config(h)
    h.write_config()
    h.certs = workdir / "internal-ssl"
    h.start()
    try:
        yield h
    finally:
        h.stop()


def hub_ports(double) -> list[dict]:
    return [p for p in double.client.ports() if p["description"] == DESCRIPTION]


def san(cert_pem: bytes) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [f"IP:{n}" for n in names.get_values_for_type(x509.IPAddress)] + [
        f"DNS:{n}" for n in names.get_values_for_type(x509.DNSName)
    ]


def report_file(report: dict, path: str) -> dict:
    return next(f for f in report["files"] if f["path"] == path)


@pytest.fixture(scope="module")
def served(hub, double):
    server = spawn_ready(hub, double, "tls-alice")
    report = double.client.boot_report(server["id"])
    return server, report


def test_the_server_answers_through_the_proxy(hub, served):
    r = hub.through_proxy("tls-alice")
    assert r.status_code == 200, r.text[:300]
    assert "version" in r.json()


def test_the_hub_reaches_the_server_over_https(hub, served):
    _, report = served
    log = hub.log_text()
    assert f"https://{report['address']}:{hub.singleuser_port}" in log
    assert f"http://{report['address']}:{hub.singleuser_port}/user/tls-alice" not in log


def test_the_vm_booted_on_a_port_of_this_hub_with_the_configured_group(double, served):
    server, report = served
    [port] = hub_ports(double)
    assert port["name"] == server["name"]
    assert port["device_id"] == server["id"]
    assert [ip["ip_address"] for ip in port["fixed_ips"]] == [report["address"]]
    default_group = next(g for g in double.client.catalogue()["security_groups"] if g["name"] == "default")
    assert port["security_groups"] == [default_group["id"]]


def test_the_certificate_names_the_vms_address_and_not_the_hubs(served):
    _, report = served
    names = san((Path(report["root"]) / CERT.lstrip("/")).read_bytes())
    assert f"IP:{report['address']}" in names
    assert "DNS:hub.internal.example" not in names  # the hub's trusted_alt_names stay the hub's


def test_the_key_is_private_to_the_server_and_gone_from_the_hub(hub, served):
    _, report = served
    assert report_file(report, KEY)["mode"] == "0600"
    unit = (Path(report["root"]) / "etc/systemd/system/jupyterhub-singleuser.service").read_text()
    assert f'ExecStartPre=+/bin/chown "tls-alice" "{KEY}"' in unit
    assert not list(hub.certs.rglob("user-tls-alice*.key"))


def test_the_server_refuses_plain_http_and_clients_without_the_hubs_certificate(hub, served):
    _, report = served
    base = f"{report['address']}:{hub.singleuser_port}/user/tls-alice/api"
    with pytest.raises(requests.RequestException):
        requests.get(f"http://{base}", timeout=5)
    context = ssl.create_default_context(cafile=str(hub.certs / "notebooks-ca_trust.crt"))
    context.check_hostname = False
    with pytest.raises((ssl.SSLError, OSError)):
        urllib.request.urlopen(f"https://{base}", context=context, timeout=5)


def test_the_env_names_the_files_on_the_vm(double, served):
    server, _ = served
    [unit] = double.client.instance_env(server["id"])
    env = unit["env"]
    assert env["JUPYTERHUB_SSL_KEYFILE"].endswith(KEY)
    assert env["JUPYTERHUB_SERVICE_URL"].startswith("https://")


def test_stop_deletes_the_port(hub, double, served):
    assert hub.api("DELETE", "/users/tls-alice/server").status_code in (202, 204)
    hub.wait_gone("tls-alice")
    assert not cloud_servers(double, user="tls-alice")
    assert wait_until(lambda: not hub_ports(double), timeout_s=30, what="the port's deletion")


@pytest.mark.parametrize(
    "fault",
    [
        # Nova refuses the create: the port made for it goes
        ({"type": "quota", "resource": "instances"}, "POST", r"^/v2\.1/servers$"),
        # the port is made but its answer lost: found by name and description, deleted
        ({"type": "lost_response"}, "POST", r"^/v2\.0/ports$"),
    ],
    ids=["server-refused", "port-answer-lost"],
)
def test_a_failed_start_leaves_no_port(hub, double, fault):
    effect, method, path = fault
    user = f"tls-fail-{method.lower()}-{len(path)}"
    double.client.add_fault(effect, method=method, path=path, times=1)
    hub.create_user(user)
    r = hub.api("POST", f"/users/{user}/server", json={})
    if r.status_code in (201, 202):  # the failure came after the hub's own wait: the progress says so
        events = hub.progress(user)
        assert events[-1].get("failed"), json.dumps(events)
    else:
        assert r.status_code == 503, r.text
    assert wait_until(lambda: not hub_ports(double), timeout_s=30, what="no port of the failed start")
    assert not cloud_servers(double, user=user)


# ---------------------------------------------------------------------------------------------- the warm pool
POOL_USER = "tls-pooled"


def another_hub(tmp_path_factory, double, name: str, spawner_config: dict, extra: str) -> Iterator[Hub]:
    """One more hub with internal_ssl, its own working directory and hub id ``hubtier-<name>``."""
    workdir = tmp_path_factory.mktemp(name) / "hub"
    workdir.mkdir()
    h = Hub(workdir, double, spawner_config)
    h.extra_config = tls_config(h) + f"\nc.LibcloudSpawner.hub_id = 'hubtier-{name}'\n" + extra
    h.write_config()
    h.start()
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture(scope="module")
def pool_hub(hub, tmp_path_factory, double):
    """A second hub (its own id) with a pool of one: a claim gets its certificate over the hand-over."""
    entry = {"image": "debian-12-jupyter", "size": "m1.small", "min": 1, "max": 1}
    extra = f"""
c.LibcloudSpawner.warm_pool = [{entry!r}]
c.LibcloudSpawner.pool_agent_port = {free_port()}
c.LibcloudSpawner.pool_create_interval_seconds = 0.2
c.LibcloudSpawner.pool_handoff_timeout_seconds = 10
c.LibcloudSpawner.fleet_refresh_seconds = 1
from libcloudspawner.pool import warm_at_hub_start
warm_at_hub_start(c)
"""
    yield from another_hub(tmp_path_factory, double, "tls-pool", original_config(double.url), extra)


def test_a_pool_claim_gets_a_certificate_for_the_pool_vms_address(pool_hub, double):
    def ready_pool_vm():
        vms = [s for s in cloud_servers(double) if "jupyterhub-pool" in (s.get("metadata") or {})]
        return vms if vms and double.client.boot_report(vms[0]["id"]).get("status") == "running" else None

    wait_until(ready_pool_vm, timeout_s=90, interval_s=0.5, what="a pool VM with its agent")
    server = spawn_ready(pool_hub, double, POOL_USER)
    assert f"{POOL_USER}: Took VM" in pool_hub.log_text()
    assert pool_hub.through_proxy(POOL_USER).status_code == 200
    report = double.client.boot_report(server["id"])
    root = Path(report["root"])
    assert f"IP:{report['address']}" in san((root / CERT.lstrip("/")).read_bytes())
    assert oct((root / KEY.lstrip("/")).stat().st_mode & 0o777) == "0o600"
    descriptions = {p["description"] for p in double.client.ports()}
    assert not any("hubtier-tls-pool" in d for d in descriptions)  # a pool VM keeps Nova's own port
    assert pool_hub.api("DELETE", f"/users/{POOL_USER}/server").status_code in (202, 204)
    pool_hub.wait_gone(POOL_USER)
    assert not cloud_servers(double, user=POOL_USER)


# ---------------------------------------------------------------------------------------------- a kept VM
KEPT_USER = "tls-kept"


@pytest.fixture(scope="module")
def kept_hub(pool_hub, tmp_path_factory, double):
    """A third hub (its own id) whose stops power the VM off and keep it."""
    config = {**original_config(double.url), "stop_action": "stop"}
    yield from another_hub(tmp_path_factory, double, "tls-kept", config, "")


def test_a_kept_vm_keeps_its_port_and_is_resumed_over_https(kept_hub, double):
    described = "jupyterhub-managed-by=libcloudspawner jupyterhub-hub-id=hubtier-tls-kept"
    first = spawn_ready(kept_hub, double, KEPT_USER)
    assert kept_hub.api("DELETE", f"/users/{KEPT_USER}/server").status_code in (202, 204)
    kept_hub.wait_gone(KEPT_USER)
    [port] = [p for p in double.client.ports() if p["description"] == described]
    assert port["device_id"] == first["id"]  # powered off, kept: its port too
    assert kept_hub.api("POST", f"/users/{KEPT_USER}/server", json={}).status_code in (201, 202)
    kept_hub.wait_ready(KEPT_USER)
    [again] = cloud_servers(double, user=KEPT_USER)
    assert again["id"] == first["id"]
    assert kept_hub.through_proxy(KEPT_USER).status_code == 200


# ---------------------------------------------------------------------------------------------- a deletion retried
RETRIED_USER = "tls-dora"


@pytest.fixture(scope="module")
def quick_stop_hub(kept_hub, tmp_path_factory, double):
    """A fourth hub (its own id) whose stops give a failing DELETE up after 4 s (then retried in the background)."""
    extra = "c.LibcloudSpawner.stop_timeout_seconds = 4\n"
    yield from another_hub(tmp_path_factory, double, "tls-del", original_config(double.url), extra)


def test_a_vm_deleted_in_the_background_takes_its_port_with_it(quick_stop_hub, double):
    described = "jupyterhub-managed-by=libcloudspawner jupyterhub-hub-id=hubtier-tls-del"

    def its_ports() -> list[dict]:
        return [p for p in double.client.ports() if p["description"] == described]

    server = spawn_ready(quick_stop_hub, double, RETRIED_USER)
    assert [p["device_id"] for p in its_ports()] == [server["id"]]
    rule = double.client.add_fault({"type": "status", "status": 500}, method="DELETE",
                                   path=f"^/v2.1/servers/{server['id']}$")  # fmt: skip
    try:
        assert quick_stop_hub.api("DELETE", f"/users/{RETRIED_USER}/server").status_code in (202, 204)
        quick_stop_hub.wait_gone(RETRIED_USER, timeout_s=60)
        record = json.loads((quick_stop_hub.workdir / "libcloudspawner-deletions.json").read_text())
        assert [(e["instance_id"], e.get("ports_of_hub")) for e in record] == [(server["id"], "hubtier-tls-del")]
        assert len(its_ports()) == 1  # the VM is still there, and so is its port
    finally:
        double.client.remove_fault(rule["id"])
    wait_until(lambda: not cloud_servers(double, user=RETRIED_USER) and not its_ports(), timeout_s=120,
               what="the VM deleted in the background, then its port")  # fmt: skip
