"""The warm pool on the real dev cloud, a pool of one: the hub boots a pool VM from the project's image before any
user asks; a user's spawn through the form takes it (the progress says so), the hub hands the user over to the
VM's agent (mutual TLS on `pool_agent_port`), and the server answers through the proxy with a kernel. The pool
then refills with a new VM; the served VM is deleted at stop, never given to another user."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest

from testkit.e2e import TAG_HUB_ID, run_in_kernel, servers_of
from testkit.hub import _xsrf
from testkit.wait import wait_until
from tests.e2e.conftest import doc_config, e2e_hub

pytestmark = pytest.mark.e2e

AGENT_PORT = 9443  # the dev cloud's server group opens it to the host (devcloud/cloud.py GUEST_PORTS)
POOL_TAG = "jupyterhub-pool-member"
USER = "pooled"
PROFILE = "pooled"
BOOT_DEADLINE_S = 1500


def pool_vms(nova, hub_id: str) -> list:
    return [s for s in nova.compute.servers()
            if (s.metadata or {}).get(TAG_HUB_ID) == hub_id and POOL_TAG in (s.metadata or {})]  # fmt: skip


def address(server) -> str:
    return next(a["addr"] for net in server.addresses.values() for a in net if a.get("version", 4) == 4)


def agent_answers(server) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((address(server), AGENT_PORT), timeout=3):
        return True
    return False


@pytest.fixture(scope="module")
def pool_hub(tmp_path_factory, facts, image, nova, artifacts, ssh_key):
    target = {"profile": PROFILE, "min": 1, "max": 1}
    extra = f"""
c.LibcloudSpawner.warm_pool = [{target!r}]
c.LibcloudSpawner.pool_agent_port = {AGENT_PORT}
c.LibcloudSpawner.pool_handoff_timeout_seconds = 120
c.LibcloudSpawner.fleet_refresh_seconds = 5
from libcloudspawner.pool import warm_at_hub_start
warm_at_hub_start(c)
"""
    profile = {"display_name": "Pooled", "slug": PROFILE, "size": "j1.small", "image": image["image_id"]}
    config = {**doc_config(facts, image), "profiles": [profile]}
    with e2e_hub(tmp_path_factory.mktemp("pool"), facts, config, nova, artifacts, ssh_key, extra, "pool") as h:
        try:
            yield h
        finally:
            with contextlib.suppress(Exception):
                h.api("DELETE", h.server_url(USER))
                wait_until(lambda: h.spawner_model(USER) is None, timeout_s=300, interval_s=3, what="the stop")
            h.stop()  # a stopped hub refills nothing: the pool VMs left are deleted here
            for server in pool_vms(nova, h.hub_id):
                nova.compute.delete_server(server, ignore_missing=True)
            wait_until(lambda: not pool_vms(nova, h.hub_id), timeout_s=300, interval_s=5, what="the pool VMs to go")


@pytest.fixture(scope="module")
def ready_pool_vm(pool_hub, nova):
    """The pool VM, booted and its agent answering (what a claim needs)."""
    started = time.monotonic()

    def ready():
        vms = [s for s in pool_vms(nova, pool_hub.hub_id) if s.status == "ACTIVE"]
        return vms[0] if vms and agent_answers(vms[0]) else None

    vm = wait_until(ready, timeout_s=BOOT_DEADLINE_S, interval_s=5, what="a pool VM whose agent answers")
    pool_hub.timings["pool_vm_ready_s"] = round(time.monotonic() - started, 1)
    return vm


def test_a_spawn_through_the_form_takes_the_pool_vm(pool_hub, nova, ready_pool_vm):
    session = pool_hub.login(USER)
    xsrf = _xsrf(session.get(f"{pool_hub.url}/hub/spawn", timeout=30).text)
    started = time.monotonic()
    form = {"profile": PROFILE, "_xsrf": xsrf}
    r = session.post(f"{pool_hub.url}/hub/spawn", data=form, timeout=60, allow_redirects=False)
    assert r.status_code == 302, (r.status_code, r.text[:300])
    events = pool_hub.progress(USER, timeout_s=BOOT_DEADLINE_S)
    pool_hub.timings["pooled_spawn_to_ready_s"] = round(time.monotonic() - started, 1)
    assert events and events[-1].get("ready"), events[-3:]
    messages = [e.get("message", "") for e in events]
    assert any("from the warm pool" in m for m in messages), messages
    assert not any("booting a new VM" in m for m in messages), messages
    (vm,) = servers_of(nova, pool_hub.hub_id, USER)
    assert vm.id == ready_pool_vm.id
    assert POOL_TAG not in (vm.metadata or {})  # retagged as the user's


def test_the_pooled_server_runs_a_kernel_through_the_proxy(pool_hub):
    r = pool_hub.through_proxy(USER, path="api/status")
    assert r.status_code == 200, (r.status_code, r.text[:200])
    code = "import numpy, getpass\nprint('RESULT', numpy.arange(4).sum(), getpass.getuser())\n"
    result = run_in_kernel(pool_hub, USER, code, timeout_s=400)
    assert result["status"] == "ok", result
    assert "RESULT 6 pooled" in result["stdout"], result


def test_the_pool_refills_and_the_served_vm_is_deleted_at_stop(pool_hub, nova, ready_pool_vm):
    wait_until(lambda: [s for s in pool_vms(nova, pool_hub.hub_id) if s.id != ready_pool_vm.id], timeout_s=300,
               interval_s=5, what="the pool to boot a new VM")  # fmt: skip
    r = pool_hub.api("DELETE", pool_hub.server_url(USER))
    assert r.status_code in (202, 204), r.text
    wait_until(lambda: nova.compute.find_server(ready_pool_vm.id, ignore_missing=True) is None, timeout_s=300,
               interval_s=5, what="the served pool VM to be deleted")  # fmt: skip
