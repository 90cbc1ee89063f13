"""JupyterHub's internal_ssl on the real dev cloud, one VM: the hub (its certificate valid for the address the VMs
reach it at, `trusted_alt_names`) creates the VM's Neutron port first, issues the server's certificate for the
port's address, and the server serves https only; through the proxy it answers. On the VM the key is `0600` and
owned by the server's account, the certificate names the VM's address, plain http to the server's port fails.
After the stop neither the VM nor its port is left."""

from __future__ import annotations

import subprocess
import time

import pytest
import requests
from cryptography import x509

from testkit.e2e import servers_of, vm_journal
from testkit.wait import wait_until
from tests.e2e.conftest import doc_config, e2e_hub

pytestmark = pytest.mark.e2e

USER = "tlsuser"
KEY = "/etc/jupyterhub-singleuser/ssl/server.key"
CERT = "/etc/jupyterhub-singleuser/ssl/server.crt"
READY_DEADLINE_S = 900


def hub_ports(nova, hub_id: str) -> list:
    wanted = f"jupyterhub-managed-by=libcloudspawner jupyterhub-hub-id={hub_id}"
    return list(nova.network.ports(description=wanted))


def on_vm(hub, address: str, command: str) -> str:
    r = subprocess.run(
        ["ssh", "-i", str(hub.ssh_key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "ConnectTimeout=20", "-o", "BatchMode=yes", f"debian@{address}", command],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, f"{command!r} on {address}: {r.returncode} {r.stderr[-500:]}"
    return r.stdout


@pytest.fixture(scope="module")
def tls_hub(tmp_path_factory, facts, image, nova, artifacts, ssh_key):
    workdir = tmp_path_factory.mktemp("tls")
    # the hub, its API and the proxy's API speak https; the hub's certificate names the address the VMs use
    extra = f"""
c.JupyterHub.internal_ssl = True
c.JupyterHub.internal_certs_location = {str(workdir / "internal-ssl")!r}
c.JupyterHub.trusted_alt_names = ['IP:{facts["host_ip"]}']
c.JupyterHub.hub_bind_url = c.JupyterHub.hub_bind_url.replace('http://', 'https://')
c.JupyterHub.hub_connect_url = c.JupyterHub.hub_connect_url.replace('http://', 'https://')
c.ConfigurableHTTPProxy.api_url = c.ConfigurableHTTPProxy.api_url.replace('http://', 'https://')
"""
    with e2e_hub(workdir, facts, doc_config(facts, image), nova, artifacts, ssh_key, extra, "tls") as h:
        try:
            yield h
        finally:
            h.api("DELETE", h.server_url(USER))
            # the teardown's check covers servers; ports are this test's: none may be left either
            for port in hub_ports(nova, h.hub_id):
                if not port.device_id:
                    nova.network.delete_port(port, ignore_missing=True)


@pytest.fixture(scope="module")
def served(tls_hub, nova):
    started = time.monotonic()
    tls_hub.create_user(USER)
    assert tls_hub.api("POST", tls_hub.server_url(USER), json={}).status_code in (201, 202)
    try:
        model = tls_hub.wait_ready(USER, timeout_s=READY_DEADLINE_S)
    except (AssertionError, TimeoutError) as e:
        raise AssertionError(f"{e}\n{vm_journal(tls_hub, USER)}") from None
    tls_hub.timings["internal_ssl_ready_s"] = round(time.monotonic() - started, 1)
    [server] = servers_of(nova, tls_hub.hub_id, user=USER)
    return model, server


def test_the_server_answers_through_the_proxy_over_https(tls_hub, served):
    model, _ = served
    assert (model.get("state") or {}).get("address")
    r = tls_hub.through_proxy(USER)
    assert r.status_code == 200, r.text[:300]
    assert "version" in r.json()
    assert "https://" in tls_hub.log_text().split("Calling Spawner.start for " + USER, 1)[-1]


def test_the_vm_is_on_a_port_of_this_hub_in_the_server_group(tls_hub, served, nova, facts):
    _, server = served
    [port] = hub_ports(nova, tls_hub.hub_id)
    address = served[0]["state"]["address"]
    assert port.name == server.name
    assert port.device_id == server.id
    assert [ip["ip_address"] for ip in port.fixed_ips] == [address]
    group = nova.network.find_security_group(facts["server_security_group"])
    assert port.security_group_ids == [group.id]


def test_on_the_vm_the_key_is_private_to_the_servers_account(tls_hub, served):
    address = served[0]["state"]["address"]
    assert on_vm(tls_hub, address, f"sudo stat -c '%a %U' {KEY}").split() == ["600", USER]


def test_the_certificate_names_the_vms_address(tls_hub, served):
    address = served[0]["state"]["address"]
    cert = x509.load_pem_x509_certificate(on_vm(tls_hub, address, f"cat {CERT}").encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert address in [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]


def test_plain_http_to_the_server_port_fails(served):
    address = served[0]["state"]["address"]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{address}:8000/user/{USER}/api", timeout=10)


def test_after_stop_no_vm_and_no_port_remain(tls_hub, served, nova):
    assert tls_hub.api("DELETE", tls_hub.server_url(USER)).status_code in (202, 204)
    tls_hub.wait_gone(USER, timeout_s=300)
    assert not servers_of(nova, tls_hub.hub_id)
    assert wait_until(lambda: not hub_ports(nova, tls_hub.hub_id), timeout_s=60, what="the port's deletion")
