"""A stop whose DELETE keeps failing: the stop returns (so the hub revokes the server's token), the instance is
recorded beside the hub's database and deleted in the background, across a hub restart, until it is gone."""

from __future__ import annotations

import json
import re

import pytest
import requests

from testkit.hub import cloud_servers, original_config, running_hub, spawn_ready
from testkit.wait import wait_until

pytestmark = pytest.mark.hub

ONE_SERVER = "^/v2.1/servers/[0-9a-f-]+$"


@pytest.fixture(scope="module")
def hub(tmp_path_factory, double):
    extra = "c.LibcloudSpawner.stop_timeout_seconds = 4\n"
    with running_hub(tmp_path_factory.mktemp("hubdel"), double, original_config(double.url), extra) as h:
        yield h


def server_token(double, instance_id: str) -> str:
    """The API token the hub handed the instance (its environment file, as the double's boot wrote it)."""
    env = (double.state_dir / "instances" / instance_id / "root/etc/jupyterhub-singleuser/env").read_text()
    match = re.search(r"^JUPYTERHUB_API_TOKEN=\"?([0-9a-zA-Z_]+)\"?$", env, re.MULTILINE)
    assert match, "no token in the instance's environment file"
    return match.group(1)


def token_status(hub, token: str) -> int:
    return requests.get(f"{hub.url}/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=10).status_code


def test_a_stop_whose_delete_fails_returns_and_the_vm_is_deleted_later(hub, double):
    old = spawn_ready(hub, double, "dora")
    token = server_token(double, old["id"])
    assert token_status(hub, token) == 200
    rule = double.client.add_fault({"type": "status", "status": 500}, method="DELETE", path=ONE_SERVER)
    try:
        assert hub.api("DELETE", "/users/dora/server").status_code in (202, 204)
        hub.wait_gone("dora", timeout_s=60)
        assert token_status(hub, token) == 403  # revoked: stop() returned
        record = json.loads((hub.workdir / "libcloudspawner-deletions.json").read_text())
        assert [e["instance_id"] for e in record] == [old["id"]]
        assert [s["id"] for s in cloud_servers(double, user="dora")] == [old["id"]]  # DELETE still failing

        new = spawn_ready_beside(hub, double, "dora", old["id"])  # the user starts again meanwhile
        hub.restart()  # the record is read again by the new hub process
        hub.wait_ready("dora")
    finally:
        double.client.remove_fault(rule["id"])
    wait_until(
        lambda: [s["id"] for s in cloud_servers(double, user="dora")] == [new["id"]],
        timeout_s=120,
        what="the old instance deleted, the new one kept",
    )
    assert hub.through_proxy("dora").status_code == 200
    wait_until(
        lambda: json.loads((hub.workdir / "libcloudspawner-deletions.json").read_text()) == [],
        timeout_s=30,
        what="the record emptied",
    )
    assert hub.api("DELETE", "/users/dora/server").status_code in (202, 204)
    hub.wait_gone("dora")


def spawn_ready_beside(hub, double, user: str, leftover_id: str) -> dict:
    """Start ``user``'s server while ``leftover_id`` still exists; its one new instance."""
    assert hub.api("POST", f"/users/{user}/server", json={}).status_code in (201, 202)
    hub.wait_ready(user)
    [new] = [s for s in cloud_servers(double, user=user) if s["id"] != leftover_id]
    return new
