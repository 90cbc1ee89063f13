"""internal_ssl's pure parts and its certificate: the alternative names, the files the VM receives, the
user-data and create request carrying them, and a certificate issued by JupyterHub's own ``create_certs``."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from certipy import Certipy
from cloudinit_validator import Validator
from cryptography import x509
from jupyterhub.spawner import SpawnException
from systemd_rules import unit_settings

from libcloudspawner import internal_tls, userdata
from libcloudspawner.requests import create_request

HUB_NAMES = ["IP:10.99.0.1", "DNS:hub.example"]


@pytest.mark.parametrize(
    ("addresses", "configured", "expected"),
    [
        (["10.99.0.7"], [], ["IP:10.99.0.7"]),
        (["10.99.0.7"], HUB_NAMES, ["IP:10.99.0.7"]),  # JupyterHub's default: the hub's names; dropped
        (["10.99.0.7"], ["DNS:vm.example", *HUB_NAMES], ["IP:10.99.0.7", "DNS:vm.example"]),
        (["10.99.0.7", "fd00::7"], ["IP:10.99.0.7"], ["IP:10.99.0.7", "IP:fd00::7"]),
    ],
    ids=["address only", "hub names dropped", "configured names kept", "every address, no repeat"],
)
def test_alt_names(addresses, configured, expected):
    assert internal_tls.alt_names(addresses, configured, HUB_NAMES) == expected


def test_an_address_that_is_not_one_is_refused():
    with pytest.raises(ValueError):
        internal_tls.alt_names(["jupyter-alice"], [], [])


def test_the_server_reads_the_files_on_its_vm_and_the_hubs_copy_of_the_key_goes(tmp_path):
    key = tmp_path / "user-alice.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    assert internal_tls.move_certs(None, {"keyfile": str(key)}) == userdata.TLS_PATHS
    assert not key.exists()
    assert set(userdata.TLS_PATHS.values()) == {
        f"{userdata.TLS_DIR}/server.key",
        f"{userdata.TLS_DIR}/server.crt",
        f"{userdata.TLS_DIR}/ca.crt",
    }


@pytest.mark.parametrize(("internal_ssl", "scheme"), [(True, "https"), (False, "http")])
def test_scheme(internal_ssl, scheme):
    assert internal_tls.scheme(SimpleNamespace(internal_ssl=internal_ssl)) == scheme


TLS = internal_tls.ServerTls(key="-----BEGIN PRIVATE KEY-----\nsecret\n", cert="CERT\n", ca="CA\n")


def test_the_key_is_never_printed():
    assert "secret" not in repr(TLS) and "secret" not in str(TLS)


@pytest.fixture(scope="module")
def validator():
    v = Validator()
    yield v
    v.close()


def test_the_user_data_writes_the_files_and_the_unit_gives_the_key_to_the_account(validator):
    rendered = userdata.render_userdata(username="alice", env={"JUPYTERHUB_USER": "alice"},
                                        cmd=["jupyterhub-singleuser"], tls_files=TLS.userdata_files())  # fmt: skip
    ok, error, _ = validator.validate(rendered)
    assert ok, error
    files = {f["path"]: f for f in yaml.safe_load(rendered)["write_files"]}
    key = files[userdata.TLS_PATHS["keyfile"]]
    assert (key["permissions"], key["owner"], key["content"]) == ("0600", "root:root", TLS.key)
    assert files[userdata.TLS_PATHS["certfile"]]["permissions"] == "0644"
    unit = unit_settings(files[userdata.UNIT_PATH]["content"])
    assert f'+/bin/chown "alice" "{userdata.TLS_PATHS["keyfile"]}"' in unit["ExecStartPre"]
    assert TLS.key not in files[userdata.UNIT_PATH]["content"]


def test_without_internal_ssl_the_user_data_has_no_tls_file():
    rendered = userdata.render_userdata(username="alice", env={}, cmd=["jupyterhub-singleuser"])
    assert userdata.TLS_DIR not in rendered
    assert "chown" not in rendered


def test_a_create_on_a_port_names_no_network_and_no_group():
    request = create_request(name="jupyter-alice", image="img", size="m1", networks=["net"], user_data="#cloud-config",
                             tags={"a": "b"}, security_groups=["jupyter-server"], port_id="p-1")  # fmt: skip
    assert request["port_id"] == "p-1"
    assert request["networks"] == []
    assert "security_groups" not in request


def test_a_create_without_a_port_is_unchanged():
    request = create_request(name="jupyter-alice", image="img", size="m1", networks=["net"], user_data="#cloud-config",
                             tags={"a": "b"}, security_groups=["jupyter-server"])  # fmt: skip
    assert "port_id" not in request
    assert (request["networks"], request["security_groups"]) == (["net"], ["jupyter-server"])


@pytest.fixture
def spawner(tmp_path):
    """What JupyterHub's ``Spawner.create_certs`` reads of a spawner, with the hub's notebooks CA."""
    store = tmp_path / "internal-ssl"
    ca = Certipy(store_dir=str(store)).create_ca("notebooks-ca")
    return SimpleNamespace(
        ssl_alt_names=list(HUB_NAMES), trusted_alt_names=list(HUB_NAMES), ssl_alt_names_include_local=True,
        internal_certs_location=str(store), internal_trust_bundles={"notebooks-ca": ca["files"]["cert"]},
        user=SimpleNamespace(name="alice"), log=logging.getLogger("test"), _log_name="alice", store=store,
        ca=ca["files"]["cert"],
    )  # fmt: skip


async def test_issue_names_the_vm_and_leaves_no_key_on_the_hub(spawner):
    tls = await internal_tls.issue(spawner, ["10.99.0.42"])
    cert = x509.load_pem_x509_certificate(tls.cert.encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "10.99.0.42"]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]  # not the hub's
    assert tls.ca == Path(spawner.ca).read_text()
    assert "PRIVATE KEY" in tls.key
    assert (spawner.store / "user-alice" / "user-alice.crt").is_file()
    assert not (spawner.store / "user-alice" / "user-alice.key").exists()  # the key lives on the VM only
    assert spawner.ssl_alt_names == HUB_NAMES  # the spawner's setting is left as it was


async def test_a_certificate_that_cannot_be_made_is_a_clear_error(spawner):
    spawner.internal_trust_bundles = {}  # no notebooks CA
    with pytest.raises(SpawnException) as raised:
        await internal_tls.issue(spawner, ["10.99.0.42"])
    assert raised.value.status_code == 500
    assert raised.value.jupyterhub_message.startswith("Your server's TLS certificate could not be made")
    assert "notebooks-ca" in raised.value.log_message
