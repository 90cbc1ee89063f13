"""The warm pool with a real hub: pooled spawns through the proxy, refill, fallback to a cold boot (empty
pool, failed hand-over), no VM shared by two users, a hub SIGKILLed mid-claim leaking nothing, a
configuration change draining the old pool VMs, and a pool switched off draining its idle VMs while the
server on a former pool VM keeps running. The double's pool VMs run the real pool agent on their own
loopback address; its systemctl and useradd act on the fake VM."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from testkit.hub import cloud_servers, original_config, running_hub
from testkit.localhost import free_port
from testkit.wait import wait_until

pytestmark = pytest.mark.hub

AGENT_UNIT = "lcs-pool-agent.service"
CLAIMS = "libcloudspawner-pool-claims.json"


def pool_config(size: str = "m1.small", count: int = 2) -> str:
    entry = {"image": "debian-12-jupyter", "size": size, "min": count, "max": count}
    return f"""
c.LibcloudSpawner.warm_pool = [{entry!r}]
c.LibcloudSpawner.pool_agent_port = {AGENT_PORT}
c.LibcloudSpawner.pool_create_interval_seconds = 0.2
c.LibcloudSpawner.pool_handoff_timeout_seconds = 5
c.LibcloudSpawner.fleet_refresh_seconds = 1
from libcloudspawner.pool import warm_at_hub_start
warm_at_hub_start(c)
"""


AGENT_PORT = free_port()


@pytest.fixture(scope="module")
def hub(tmp_path_factory, double):
    with running_hub(tmp_path_factory.mktemp("hubpool"), double, original_config(double.url), pool_config()) as h:
        yield h


@pytest.fixture(autouse=True)
def no_faults(double):
    yield
    double.client.clear_faults()


def pool_vms(double) -> list[dict]:
    return [s for s in cloud_servers(double) if "jupyterhub-pool" in (s.get("metadata") or {})]


def agent_up(double, server_id: str) -> bool:
    report = double.client.boot_report(server_id)
    return any(p["unit"] == AGENT_UNIT and p["pid"] and p["returncode"] is None for p in report.get("processes", []))


def wait_pool(double, count: int, timeout_s: float = 90) -> list[dict]:
    """Until ``count`` pool VMs are ACTIVE with their agent answering; then a little more, for the hub's
    fleet view (refreshed every second) to list them so."""

    def ready():
        vms = [s for s in pool_vms(double) if s.get("status") == "ACTIVE" and agent_up(double, s["id"])]
        return vms if len(vms) >= count else None

    vms = wait_until(ready, timeout_s=timeout_s, interval_s=0.5, what=f"{count} ready pool VMs")
    time.sleep(1.5)
    return vms


def spawn(hub, user: str) -> None:
    hub.create_user(user)
    assert hub.api("POST", f"/users/{user}/server", json={}).status_code in (201, 202)


def messages(hub, user: str) -> str:
    """The progress messages of ``user``'s starts, as the hub logs them (a spawn from the pool is over before a
    progress stream opened after it would see more than its last event)."""
    return "\n".join(line for line in hub.log_text().splitlines() if "progress:" in line and f" {user}: " in line)


def server_of(double, user: str) -> dict:
    [server] = cloud_servers(double, user=user)
    return server


def stop(hub, *users: str) -> None:
    for user in users:
        assert hub.api("DELETE", f"/users/{user}/server").status_code in (202, 204, 400)
    for user in users:
        hub.wait_gone(user)


def test_a_pooled_spawn_serves_the_user_through_the_proxy_and_the_pool_refills(hub, double):
    before = {s["id"] for s in wait_pool(double, 2)}
    spawn(hub, "pia")
    assert "from the warm pool" in messages(hub, "pia")
    hub.wait_ready("pia")
    server = server_of(double, "pia")
    assert server["id"] in before  # a pool VM, not a new one
    assert server["name"] == "jupyter-pia"
    meta = server["metadata"]
    assert meta["jupyterhub-user"] == "pia" and meta["jupyterhub-spawn-id"]
    assert not {k for k in meta if k.startswith("jupyterhub-pool")}  # retagged: the tags of a fresh instance
    assert hub.through_proxy("pia").status_code == 200
    env = {e["unit"]: e["env"] for e in double.client.instance_env(server["id"])}
    assert env["jupyterhub-singleuser.service"]["JUPYTERHUB_API_TOKEN"]  # handed over, never in user-data
    assert "JUPYTERHUB_API_TOKEN" not in double.client.user_data(server["id"])
    assert all("JUPYTERHUB_API_TOKEN" not in json.dumps(s["metadata"]) for s in cloud_servers(double))
    refilled = wait_pool(double, 2)  # the refiller replaced it
    assert server["id"] not in {s["id"] for s in refilled}
    stop(hub, "pia")
    assert server["id"] not in {s["id"] for s in cloud_servers(double)}  # deleted at stop, never recycled


def test_users_at_once_never_share_a_vm_and_an_empty_pool_boots_a_new_one(hub, double):
    pooled = {s["id"] for s in wait_pool(double, 2)}
    # the refill's creates are slow during this test: the third user finds the pool empty
    double.client.add_fault({"type": "delay", "seconds": 4}, method="POST", path="^/v2.1/servers$", times=3)
    users = ["una", "uri", "ute"]
    with ThreadPoolExecutor(3) as ex:
        list(ex.map(lambda u: spawn(hub, u), users))
    for user in users:
        hub.wait_ready(user)
    ids = {u: server_of(double, u)["id"] for u in users}
    assert len(set(ids.values())) == 3
    from_pool = [u for u in users if ids[u] in pooled]
    assert len(from_pool) == 2
    [cold] = [u for u in users if u not in from_pool]
    assert "booting a new VM" in messages(hub, cold)
    for user in users:
        assert hub.through_proxy(user).status_code == 200
    stop(hub, *users)


def test_a_failed_hand_over_deletes_the_pool_vm_and_boots_a_new_one(hub, double):
    vms = {s["id"] for s in wait_pool(double, 2)}
    for vm in vms:  # every agent stops cleanly (systemd does not restart it): no pool VM can take a user
        double.client.kill_instance_process(vm, signal="SIGTERM")
    for user in ("fay", "fox"):
        spawn(hub, user)
        hub.wait_ready(user, timeout_s=120)
        assert "could not take your server: booting a new VM" in messages(hub, user)
        assert server_of(double, user)["id"] not in vms
        assert hub.through_proxy(user).status_code == 200
    wait_until(lambda: not vms & {s["id"] for s in cloud_servers(double)}, timeout_s=60,
               what="the pool VMs that failed deleted")  # fmt: skip
    stop(hub, "fay", "fox")


def test_a_hub_sigkilled_mid_claim_leaks_nothing_after_restart(hub, double):
    wait_pool(double, 2)
    # the retag hangs (the hub answers the spawn request after 10s): the hub is killed with the claim recorded
    double.client.add_fault({"type": "delay", "seconds": 40}, method="PUT", path="^/v2.1/servers/[^/]+/metadata$",
                            times=1)  # fmt: skip
    spawn(hub, "kit")
    claims = hub.workdir / CLAIMS
    entries = wait_until(lambda: claims.exists() and json.loads(claims.read_text()), timeout_s=60, what="a claim")
    claimed = entries[0]["instance_id"]
    hub.process.kill()
    hub.process.wait(timeout=30)
    hub.start()
    wait_until(lambda: claimed not in {s["id"] for s in cloud_servers(double)}, timeout_s=60,
               what="the VM of the unfinished claim deleted")  # fmt: skip
    wait_until(lambda: json.loads(claims.read_text()) == [], timeout_s=30, what="the claim record cleared")
    model = hub.spawner_model("kit")
    assert model is None or not model.get("ready")
    wait_until(lambda: not cloud_servers(double, user="kit"), timeout_s=60, what="no instance of kit")
    wait_pool(double, 2)  # and the pool is whole again
    assert not (hub.workdir / "libcloudspawner-pool" / entries[0]["member"]).exists()


def test_a_configuration_change_drains_the_old_pool_vms(hub, double):
    old = {s["id"] for s in wait_pool(double, 2)}
    hub.extra_config = pool_config(size="m1.medium", count=1)
    hub.write_config()
    hub.restart()
    wait_until(lambda: not old & {s["id"] for s in cloud_servers(double)}, timeout_s=90, what="old pool drained")
    [new] = wait_pool(double, 1)
    assert new["id"] not in old
    assert double.client.server(new["id"])["flavor"] == "m1.medium"


def test_a_pool_switched_off_drains_its_idle_vms_and_keeps_the_served_one(hub, double):
    hub.extra_config = pool_config(count=2)
    hub.write_config()
    hub.restart()
    pooled = {s["id"] for s in wait_pool(double, 2)}
    spawn(hub, "sol")
    hub.wait_ready("sol")
    served = server_of(double, "sol")["id"]
    assert served in pooled  # a former pool VM, now serving sol
    idle = {s["id"] for s in wait_pool(double, 2)}  # refilled: two idle pool VMs besides it
    assert served not in idle
    drained_before = hub.log_text().count("Warm pool: off; no idle pool VM of this hub is left")
    # the administrator removes the pool: no warm_pool entry, no warm_at_hub_start line
    hub.extra_config = "c.LibcloudSpawner.fleet_refresh_seconds = 1\n"
    hub.write_config()
    hub.restart()
    wait_until(lambda: not pool_vms(double), timeout_s=90, what="the idle pool VMs deleted")
    assert not idle & {s["id"] for s in cloud_servers(double)}
    wait_until(lambda: hub.log_text().count("Warm pool: off; no idle pool VM of this hub is left") > drained_before,
               timeout_s=30, what="the drain to end")  # fmt: skip
    assert not any((hub.workdir / "libcloudspawner-pool").iterdir())  # the drained VMs' keys are gone
    assert server_of(double, "sol")["id"] == served  # the served VM is kept, and still serves
    assert hub.spawner_model("sol")["ready"]
    assert hub.through_proxy("sol").status_code == 200
    assert not pool_vms(double)  # nothing refilled
    stop(hub, "sol")
