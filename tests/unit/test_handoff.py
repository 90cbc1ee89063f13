"""The hand-over to a pool VM: the real agent (cloudinit/pool_agent.py) as a local process, mutual TLS with the
keys the hub generated, files written as a cold boot writes them; nothing accepted from anyone else."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from libcloudspawner import handoff, userdata
from testkit.localhost import free_port

REPO = Path(__file__).resolve().parents[2]
FAKE_TOOL = """#!/bin/sh
echo "$(basename "$0") $*" >> "$(dirname "$0")/calls"
"""


def lay_out(root: Path, user_data: str) -> None:
    """Write the cloud-config's files under ``root`` as cloud-init would."""
    for f in yaml.safe_load(user_data)["write_files"]:
        target = root / f["path"].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f["content"])
        target.chmod(int(f["permissions"], 8))


@pytest.fixture
def vm(tmp_path):
    """A pool VM's files under tmp_path/root and its agent running on 127.0.0.1 (tools faked on PATH)."""
    port = free_port()
    material = handoff.make_material(tmp_path / "hub" / "m1", "m1")
    root = tmp_path / "root"
    lay_out(root, handoff.render_pool_userdata(material, port=port, default_user=False))
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("useradd", "systemctl"):
        (tools / name).write_text(FAKE_TOOL)
        (tools / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}
    agent = subprocess.Popen(
        [sys.executable, str(root / handoff.AGENT_PATH.lstrip("/")), str(root / "etc/libcloudspawner-pool/agent.json"),
         "--bind", "127.0.0.1"], env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    yield {"port": port, "root": root, "hub": tmp_path / "hub" / "m1", "calls": tools / "calls", "agent": agent}
    if agent.poll() is None:
        agent.kill()
    agent.wait(timeout=10)


def body(username="alice", env=None):
    return handoff.claim_body(username=username, env=env or {"JUPYTERHUB_API_TOKEN": "t0ken"},
                              cmd=["jupyterhub-singleuser"])  # fmt: skip


async def test_hand_over_writes_the_cold_boot_files_and_starts_the_unit(vm):
    await handoff.hand_over(vm["hub"], "127.0.0.1", vm["port"], body(), timeout_seconds=20)
    env_path = vm["root"] / userdata.ENV_PATH.lstrip("/")
    assert env_path.read_text() == userdata.env_file({"JUPYTERHUB_API_TOKEN": "t0ken"})
    assert stat.S_IMODE(env_path.stat().st_mode) == 0o600
    unit = (vm["root"] / userdata.UNIT_PATH.lstrip("/")).read_text()
    assert unit == userdata.unit_file(username="alice", homedir="/home/alice", cmd=["jupyterhub-singleuser"])
    assert vm["calls"].read_text().splitlines() == [
        "useradd --create-home --home-dir /home/alice --shell /bin/bash alice",
        "systemctl start jupyterhub-singleuser.service",
        "systemctl enable --no-reload jupyterhub-singleuser.service",
    ]
    assert vm["agent"].wait(timeout=10) == 0  # one user per VM: the agent is gone
    assert not (vm["root"] / "etc/libcloudspawner-pool/server.key").exists()
    assert "t0ken" not in vm["agent"].stderr.read()


async def test_a_client_without_the_hubs_key_is_refused(vm, tmp_path):
    other = tmp_path / "other"
    handoff.make_material(other, "m2")  # right VM certificate pinned below, wrong client key
    (other / "vm.pem").write_text((vm["hub"] / "vm.pem").read_text())
    with pytest.raises(handoff.HandoffError):
        await handoff.hand_over(other, "127.0.0.1", vm["port"], body(), timeout_seconds=5)
    assert not vm["calls"].exists()


async def test_a_vm_that_is_not_the_pinned_one_is_refused(vm, tmp_path):
    other = tmp_path / "other"
    handoff.make_material(other, "m2")
    for name in ("hub.pem", "hub.key"):  # the hub's right client key, but another VM certificate pinned
        (other / name).write_text((vm["hub"] / name).read_text())
    with pytest.raises(handoff.HandoffError):
        await handoff.hand_over(other, "127.0.0.1", vm["port"], body(), timeout_seconds=5)
    assert not vm["calls"].exists()


async def test_a_second_claim_is_refused(vm):
    await handoff.hand_over(vm["hub"], "127.0.0.1", vm["port"], body(), timeout_seconds=20)
    with pytest.raises(handoff.HandoffError):
        await handoff.hand_over(vm["hub"], "127.0.0.1", vm["port"], body("bob"), timeout_seconds=3)


async def test_an_agent_that_never_answers_ends_at_the_deadline(tmp_path):
    handoff.make_material(tmp_path, "m3")
    started = time.monotonic()
    with pytest.raises(handoff.HandoffError, match="did not answer"):
        await handoff.hand_over(tmp_path, "127.0.0.1", free_port(), body(), timeout_seconds=2)
    assert time.monotonic() - started < 10


def test_hub_keys_are_private_and_the_user_data_holds_no_token(tmp_path):
    material = handoff.make_material(tmp_path / "m4", "m4")
    assert stat.S_IMODE((tmp_path / "m4").stat().st_mode) == 0o700
    for name in ("hub.key", "hub.pem", "vm.pem"):
        assert stat.S_IMODE((tmp_path / "m4" / name).stat().st_mode) == 0o600
    text = handoff.render_pool_userdata(material, port=9443, default_user=False)
    assert "JUPYTERHUB_API_TOKEN" not in text
    assert (tmp_path / "m4" / "hub.key").read_text() not in text  # the hub's key never leaves the hub
    assert "BootMaterial(...)" == repr(material)


def test_the_pool_vms_user_data_passes_the_real_cloud_init_cli(tmp_path):
    from cloudinit_validator import validate_with_cli

    path = tmp_path / "user-data"
    material = handoff.make_material(tmp_path / "m5", "m5")
    path.write_text(handoff.render_pool_userdata(material, port=9443, default_user=True))
    result = validate_with_cli(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


@pytest.mark.parametrize("metadata_service", [False, True])
def test_a_claimed_vms_unit_is_the_cold_boots_sandbox_and_metadata_rule(metadata_service):
    sent = json.loads(handoff.claim_body(username="alice", env={"JUPYTERHUB_API_TOKEN": "t"},
                                         cmd=["jupyterhub-singleuser"], metadata_service=metadata_service))  # fmt: skip
    cold = userdata.unit_file(username="alice", homedir="/home/alice", cmd=["jupyterhub-singleuser"],
                              metadata_service=metadata_service)  # fmt: skip
    assert sent["unit_file"] == cold
    assert ("ExecStartPre=+/usr/sbin/nft" in cold) is not metadata_service and "NoNewPrivileges=yes" in cold


async def test_internal_ssl_files_go_over_the_hand_over(vm):
    tls = {"key": "-----BEGIN PRIVATE KEY-----\nk\n", "cert": "CERT\n", "ca": "CA\n"}
    claim = handoff.claim_body(username="alice", env={"JUPYTERHUB_API_TOKEN": "t0ken"}, cmd=["jupyterhub-singleuser"],
                               tls=tls)  # fmt: skip
    await handoff.hand_over(vm["hub"], "127.0.0.1", vm["port"], claim, timeout_seconds=20)
    modes = {}
    for name, path in (("key", "keyfile"), ("cert", "certfile"), ("ca", "cafile")):
        written = vm["root"] / userdata.TLS_PATHS[path].lstrip("/")
        assert written.read_text() == tls[name]
        modes[name] = stat.S_IMODE(written.stat().st_mode)
    assert modes == {"key": 0o600, "cert": 0o644, "ca": 0o644}
    unit = (vm["root"] / userdata.UNIT_PATH.lstrip("/")).read_text()
    assert f'ExecStartPre=+/bin/chown "alice" "{userdata.TLS_PATHS["keyfile"]}"' in unit
    assert "BEGIN PRIVATE" not in vm["agent"].stderr.read()
