"""A hub SIGKILLed while servers run reattaches to them; the orphan reaper deletes only this hub's orphans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import libcloudspawner
from testkit.hub import PASSWORD, cloud_servers, original_config, running_hub, spawn_ready
from testkit.wait import wait_until

pytestmark = pytest.mark.hub

HUB_ID = "hubtier"  # what testkit.hub configures


@pytest.fixture(scope="module")
def hub(tmp_path_factory, double):
    with running_hub(tmp_path_factory.mktemp("hubcrash"), double, original_config(double.url)) as h:
        yield h


def creates(double) -> int:
    return double.client.call_counts()["by_route"].get("POST /v2.1/servers", 0)


def test_hub_sigkilled_while_a_server_runs_reattaches(hub, double):
    server = spawn_ready(hub, double, "rex")
    created = creates(double)

    hub.process.kill()  # SIGKILL: no shutdown code runs in the hub
    hub.process.wait(timeout=30)
    hub.start()

    hub.wait_ready("rex")
    assert hub.through_proxy("rex").status_code == 200
    assert creates(double) == created  # reattached, not re-created
    assert [s["id"] for s in cloud_servers(double, user="rex")] == [server["id"]]
    assert hub.api("DELETE", "/users/rex/server").status_code in (202, 204)
    hub.wait_gone("rex")
    assert not cloud_servers(double, user="rex")


def _libcloud_driver(double):
    from libcloud.compute.providers import get_driver

    params = original_config(double.url)["libcloudparams"]
    kwargs = {k: v for k, v in params.items() if k not in ("arg_user_id", "arg_key")}
    return get_driver("openstack")(params["arg_user_id"], params["arg_key"], api_version="2.0", **kwargs)


def _create(driver, name: str, metadata: dict[str, str]):
    image = next(i for i in driver.list_images() if i.name == "debian-12-jupyter")
    size = next(s for s in driver.list_sizes() if s.name == "m1.small")
    net = next(n for n in driver.ex_list_networks() if n.name == "flatnet")
    return driver.create_node(name=name, image=image, size=size, networks=[net], ex_metadata=metadata)


def _tags(hub_id: str, user: str, server: str = "") -> dict[str, str]:
    return {
        "jupyterhub-hub-id": hub_id,
        "jupyterhub-user": user,
        "jupyterhub-server-name": server,
        "jupyterhub-managed-by": "libcloudspawner",
    }


def _reaper(hub, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    package_root = Path(libcloudspawner.__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(package_root), env.get("PYTHONPATH")]))
    env["JUPYTERHUB_API_TOKEN"] = hub.token
    # as documented: the hub's API URL comes from the hub's configuration (its hub_bind_url here)
    cmd = [sys.executable, "-m", "libcloudspawner.reaper", "--config", str(hub.config_path),
           "--min-age-seconds", "0", "--json", *args]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_reaper_deletes_only_this_hubs_orphans(hub, double):
    owned = spawn_ready(hub, double, "owner")

    driver = _libcloud_driver(double)
    orphan = _create(driver, "jupyter-ghost", _tags(HUB_ID, "ghost"))  # e.g. left by a lost hub database
    other_hub = _create(driver, "jupyter-other", _tags("another-hub", "ghost"))
    untagged = _create(driver, "someone-elses-vm", {"owner": "ops"})
    for node in (orphan, other_hub, untagged):
        double.client.wait_for_server(node.id, status="ACTIVE", timeout_s=60)

    dry = _reaper(hub)
    assert dry.returncode == 0, dry.stderr
    verdicts = [json.loads(line) for line in dry.stdout.splitlines()]
    assert {v["instance_id"]: v["orphan"] for v in verdicts} == {owned["id"]: False, orphan.id: True}
    assert {s["id"] for s in cloud_servers(double)} >= {owned["id"], orphan.id, other_hub.id, untagged.id}
    assert PASSWORD not in dry.stdout + dry.stderr
    assert "alembic" not in dry.stderr.lower()  # no library noise in cron mail

    wet = _reaper(hub, "--delete")
    assert wet.returncode == 0, wet.stderr
    wait_until(lambda: orphan.id not in {s["id"] for s in cloud_servers(double)}, timeout_s=60, what="orphan gone")
    left = {s["id"] for s in cloud_servers(double)}
    assert {owned["id"], other_hub.id, untagged.id} <= left
    assert hub.spawner_model("owner")["ready"]  # the hub's own server untouched

    for node in (other_hub, untagged):
        driver.destroy_node(node)
    assert hub.api("DELETE", "/users/owner/server").status_code in (202, 204)
    hub.wait_gone("owner")
