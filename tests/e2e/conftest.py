"""Fixtures of the end-to-end tier: the dev cloud (real OpenStack on this machine), the published image,
and one real JupyterHub + proxy with LibcloudSpawner configured as the original documentation does.

Prerequisites (each fixture fails naming the command if missing): `invoke devcloud up`, then
`invoke publish-image --cloud devcloud`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.e2e import (
    ARTIFACTS,
    MANIFEST_PATH,
    connect_nova,
    devcloud_facts,
    hub_bind_port,
    new_hub_id,
    published_image,
    servers_of,
)
from testkit.hub import Hub

#: a spawn of the `blank` image (boots to nothing) gets this start_timeout, every other spawn START_TIMEOUT_S
BLANK_START_TIMEOUT_S = 75
START_TIMEOUT_S = 1500
#: the user the idle culler is allowed to see (its role is scoped to this user only)
CULLED_USER = "bob"
CULL_TIMEOUT_S = 60


@pytest.fixture(scope="session")
def facts():
    return devcloud_facts()


@pytest.fixture(scope="session")
def nova(facts):
    conn = connect_nova(facts)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def image(nova):
    return published_image(nova)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """Artifacts go under pytest's tmp dir and are copied to <repo>/artifacts/e2e/ at the end."""
    local = tmp_path_factory.mktemp("artifacts")
    yield local
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for f in local.iterdir():
        if f.is_file():
            shutil.copy2(f, ARTIFACTS / f.name)


def doc_libcloudparams(facts) -> dict:
    """The original documentation's `libcloudparams` (Keystone v3 password), for the dev cloud."""
    return {
        "arg_user_id": facts["user"],
        "arg_key": facts["password"],
        "ex_force_auth_version": facts["auth_version"],
        "ex_force_auth_url": facts["auth_url"],
        "ex_force_service_region": facts["region"],
        "ex_tenant_name": facts["project"],
        "ex_domain_name": "default",
    }


def doc_config(facts, image) -> dict:
    """The original documentation's configuration lines, pointed at the dev cloud."""
    return {
        "libcloudparams": doc_libcloudparams(facts),
        "userserver_net": facts["network"],
        "cloud_region": facts["region"],
        "userserver_sizes": [("2 vCPU, 2 GiB", "j1.small"), ("1 vCPU, 1 GiB", "j1.tiny")],
        "userserver_images": [
            (image["display_name"], image["image_name"]),
            ("Blank disk (never serves Jupyter)", "blank"),
        ],
    }


def culler_config(user: str, timeout_s: int) -> str:
    """jupyterhub-idle-culler as a hub service, its role scoped to one user (so it leaves other tests alone)."""
    scopes = [f"{s}!user={user}" for s in ("list:users", "read:users:activity", "read:servers", "delete:servers")]
    command = ["-m", "jupyterhub_idle_culler", f"--timeout={timeout_s}", "--cull-every=10", "--concurrency=1"]
    service = f"{{'name': 'idle-culler', 'command': [sys.executable, *{command!r}]}}"
    role = f"{{'name': 'idle-culler', 'services': ['idle-culler'], 'scopes': {scopes!r}}}"
    return f"c.JupyterHub.services.append({service})\nc.JupyterHub.load_roles.append({role})"


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory, nova):
    """A Nova keypair for this run (the spawner's `userserver_keyname`): the tests read a VM's journal over SSH
    (as the image's default user) when something in it fails. Deleted at the end."""
    directory = tmp_path_factory.mktemp("ssh")
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lcs-e2e", "-f", str(key)], check=True)
    name = f"lcs-e2e-{uuid.uuid4().hex[:8]}"
    nova.compute.create_keypair(name=name, public_key=(directory / "id_ed25519.pub").read_text().strip())
    try:
        yield {"name": name, "path": key}
    finally:
        nova.compute.delete_keypair(name, ignore_missing=True)


@pytest.fixture(scope="session")
def hub(tmp_path_factory, facts, image, nova, artifacts, ssh_key):
    with e2e_hub(tmp_path_factory.mktemp("hub"), facts, doc_config(facts, image), nova, artifacts, ssh_key) as h:
        yield h


@contextlib.contextmanager
def e2e_hub(workdir: Path, facts, spawner_config: dict, nova, artifacts: Path, ssh_key, extra: str = "",
            name: str = "") -> Iterator[Hub]:  # fmt: skip
    """A real hub for the dev cloud (its own hub id), stopped at the end with every server and instance gone; its
    log and timings go to the artifacts (``jupyterhub-NAME.log``, ``timings-NAME.json`` when ``name`` is given)."""
    hub_id = new_hub_id()
    host = facts["host_ip"]
    group = facts.get("server_security_group")
    if not group:
        pytest.fail("devcloud/out/state.json names no server security group: run `invoke devcloud up`", pytrace=False)
    port = hub_bind_port(host)
    config = (
        f"""
import sys
# where the VMs (on {facts["network"]}, no route elsewhere) reach the hub API
c.JupyterHub.hub_bind_url = 'http://{host}:{port}'
c.JupyterHub.hub_connect_url = 'http://{host}:{port}'
c.LibcloudSpawner.port = 8000  # the port the dev cloud's security group opens to the host
c.LibcloudSpawner.security_groups = [{group!r}]  # ... and to nothing else: not to other users' VMs
c.LibcloudSpawner.hub_id = {hub_id!r}
c.LibcloudSpawner.image_manifest = {str(MANIFEST_PATH)!r}
c.LibcloudSpawner.image_manifest_cloud = 'devcloud'
c.LibcloudSpawner.startup_poll_interval_seconds = 3
c.LibcloudSpawner.api_timeout_seconds = 60
c.LibcloudSpawner.start_timeout = {START_TIMEOUT_S}
c.LibcloudSpawner.http_timeout = 120
c.LibcloudSpawner.stop_timeout_seconds = 240
c.LibcloudSpawner.userserver_keyname = {ssh_key["name"]!r}  # for the diagnostics: testkit/e2e.vm_journal

def _short_start_for_blank(spawner):
    # the blank disk boots to nothing: let its spawn fail quickly (a real deployment's start_timeout is long)
    if (spawner.user_options or {{}}).get('image') == 'blank':
        spawner.start_timeout = {BLANK_START_TIMEOUT_S}

c.Spawner.pre_spawn_hook = _short_start_for_blank
"""
        + extra
    )
    h = Hub(workdir, None, spawner_config, config)
    h.hub_id = hub_id
    h.ssh_key = ssh_key["path"]
    h.timings = {}
    h.start(timeout_s=90)
    try:
        yield h
    finally:
        _teardown(h, nova, artifacts, f"-{name}" if name else "")


def _teardown(h: Hub, nova, artifacts: Path, suffix: str = "") -> None:
    """Stop every server through the hub, stop the hub, then make sure Nova holds nothing of this run."""
    with contextlib.suppress(Exception):
        users = h.api("GET", "/users").json()
        for user in users:
            for name in user.get("servers", {}):
                h.api("DELETE", h.server_url(user["name"], name))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and any(u.get("servers") for u in h.api("GET", "/users").json()):
            time.sleep(3)
    h.stop()
    shutil.copy2(h.log_path, artifacts / f"jupyterhub{suffix}.log")
    (artifacts / f"timings{suffix}.json").write_text(json.dumps(h.timings, indent=2) + "\n")
    leftovers = servers_of(nova, h.hub_id)
    for server in leftovers:
        nova.compute.delete_server(server, ignore_missing=True)
    assert not leftovers, f"servers left in Nova after the tier (deleted now): {[s.name for s in leftovers]}"
