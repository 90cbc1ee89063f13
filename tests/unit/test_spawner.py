"""LibcloudSpawner's lifecycle against a fake cloud client: cancellation, cleanup, poll, stop, state."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from jupyterhub.spawner import SpawnException

from libcloudspawner.cloud import (
    CloudError,
    CreateOutcomeUnknown,
    Instance,
)
from libcloudspawner.spawner import LibcloudSpawner


async def test_start_returns_the_url_and_keeps_state(spawner, cloud):
    url = await spawner.start()
    assert url == "http://10.0.0.9:8000"
    state = spawner.get_state()
    assert state == {"instance_id": "id-1", "instance_name": "jupyter-alice", "address": "10.0.0.9",
                     "image": "debian-12-jupyter", "size": "m1.small"}  # fmt: skip
    assert cloud.nodes["id-1"].metadata["jupyterhub-hub-id"] == "unit"
    fresh = LibcloudSpawner(user=spawner.user)
    fresh.load_state(state)
    assert (fresh.instance_id, fresh.instance_address) == ("id-1", "10.0.0.9")


async def test_invalid_options_make_no_cloud_call(spawner, cloud):
    spawner.user_options = {"size": "m1.huge"}
    with pytest.raises(SpawnException) as info:
        await spawner.start()
    assert info.value.status_code == 400
    assert cloud.calls == []


async def test_cancelled_start_removes_its_instance(spawner, cloud):
    spawner.http_ready.clear()  # Jupyter never answers
    task = asyncio.ensure_future(spawner.start())
    while not cloud.nodes:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert spawner._background.cleanup is not None  # the cleanup runs on its own, after the cancellation
    if spawner._background.cleaning:
        assert await spawner.poll() is None  # cleanup running: not "stopped" yet, so the hub calls stop()
    await spawner.stop()  # what the hub does next: waits for the cleanup
    assert cloud.nodes == {}
    assert await spawner.poll() == 0


async def test_cancel_while_the_create_answer_is_pending_still_cleans_up(spawner, cloud):
    cloud.create_delay = 0.3
    task = asyncio.ensure_future(spawner.start())
    while not cloud.nodes:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await spawner.stop()
    assert cloud.nodes == {}


async def test_lost_create_answer_adopts_the_instance_found_by_name(spawner, cloud):
    cloud.create_error = CreateOutcomeUnknown("connection reset", transient=True)
    assert await spawner.start() == "http://10.0.0.9:8000"
    assert cloud.calls.count("create_node") == 1
    assert list(cloud.nodes) == [spawner.instance_id]


async def test_create_that_lands_after_its_request_timed_out_is_adopted_not_duplicated(spawner, cloud):
    cloud.next_creates = [0.4]  # nothing found at the first look; there 0.4 s later (within api_timeout: 1 s)
    await spawner.start()
    assert cloud.calls.count("create_node") == 1
    assert list(cloud.nodes) == [spawner.instance_id]


async def test_create_that_lands_after_every_look_is_removed_at_stop(spawner, cloud):
    cloud.next_creates = [1.5]  # lands after the spawner gave up looking and created a second instance
    await spawner.start()
    assert cloud.calls.count("create_node") == 2
    await asyncio.sleep(1.6)
    assert len(cloud.nodes) == 2  # the late one exists next to the server's
    await spawner.stop()
    assert cloud.nodes == {}


async def test_create_that_lands_after_a_failed_start_is_removed_in_the_background(spawner, cloud):
    refused = CloudError("create instance failed: 403 Quota exceeded for instances", status=403)
    cloud.next_creates = [1.5, refused]
    with pytest.raises(SpawnException) as info:
        await spawner.start()
    assert "Quota exceeded" in info.value.message
    await spawner.stop()
    await asyncio.sleep(1.6)
    assert len(cloud.nodes) == 1  # landed after the start failed and the server stopped
    await spawner._background.late_watch  # looks again 2, 4 and 8 api timeouts (1 s here) after the doubtful create
    assert cloud.nodes == {}


async def test_late_landing_watch_never_removes_the_running_servers_instance(spawner, cloud):
    cloud.next_creates = [5.0]  # lands after the spawner created again and the server runs
    await spawner.start()
    assert cloud.calls.count("create_node") == 2
    await spawner._background.late_watch
    assert list(cloud.nodes) == [spawner.instance_id]
    assert await spawner.poll() is None


async def test_instance_in_error_fails_clearly_and_is_removed(spawner, cloud):
    cloud.boot_state = "error"
    with pytest.raises(SpawnException) as info:
        await spawner.start()
    assert "No valid host" in info.value.message
    assert cloud.nodes == {}


async def test_refused_create_is_a_user_message(spawner, cloud):
    cloud.create_error = CloudError("create instance failed: 403 Forbidden Quota exceeded for ram", status=403)
    with pytest.raises(SpawnException) as info:
        await spawner.start()
    assert "Quota exceeded" in info.value.message and info.value.status_code == 503
    assert cloud.nodes == {}


async def test_leftover_of_an_interrupted_start_is_removed(spawner, cloud):
    leftover = Instance(id="old", name="jupyter-alice", state="running", metadata=dict(spawner._tags()))
    cloud.nodes["old"] = leftover
    await spawner.start()
    assert "old" not in cloud.nodes and spawner.instance_id in cloud.nodes


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda c: None, None),
        (lambda c: setattr(c, "get_error", CloudError("503", transient=True, status=503)), None),
        (lambda c: setattr(c, "get_error", CloudError("403", status=403)), None),
        (lambda c: c.nodes.clear(), 0),
        (
            lambda c: c.nodes.update(
                {"id-1": c.nodes["id-1"].__class__(**{**c.nodes["id-1"].__dict__, "state": "error"})}
            ),
            1,
        ),
    ],
    ids=["running", "transient-error", "permanent-error", "gone", "error-state"],
)
async def test_poll(spawner, cloud, setup, expected):
    await spawner.start()
    setup(cloud)
    assert await spawner.poll() == expected


async def test_poll_removes_a_broken_instance(spawner, cloud):
    await spawner.start()
    node = cloud.nodes["id-1"]
    cloud.nodes["id-1"] = Instance(**{**node.__dict__, "state": "error"})
    assert await spawner.poll() == 1
    assert cloud.nodes == {}


async def test_stop_is_idempotent(spawner, cloud):
    await spawner.start()
    await spawner.stop()
    assert cloud.nodes == {}
    await spawner.stop()
    assert cloud.calls.count("destroy_node") == 1
    assert await spawner.poll() == 0


async def test_progress_reports_phases_in_order(spawner, cloud):
    events = []

    async def collect():
        async for event in spawner.progress():
            events.append(event)

    spawner._progress.reset()
    collector = asyncio.ensure_future(collect())
    await spawner.start()
    await asyncio.wait_for(collector, 5)
    percentages = [e["progress"] for e in events]
    assert percentages == sorted(percentages) and percentages[-1] == 95
    assert any("Creating virtual machine jupyter-alice" in e["message"] for e in events)


async def test_a_vm_that_stays_pending_is_reported_while_it_lasts(spawner, cloud, monkeypatch):
    """Nova may keep a VM in BUILD for minutes (seen on the dev cloud): the user sees the wait go on."""
    monkeypatch.setattr("libcloudspawner.provision.PENDING_REPORT_SECONDS", 0.05)
    cloud.boot_state = "pending"
    events = []

    async def collect():
        async for event in spawner.progress():
            events.append(event)

    def still_messages() -> list[str]:
        prefix = "Virtual machine still pending (no task) after"
        return [e["message"] for e in events if e["message"].startswith(prefix)]

    async def boots_later():
        # the VM boots once the user has been told twice that it is still pending (deadline: 5 s)
        async def told_twice():
            while len(still_messages()) < 2:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(told_twice(), 5)
        for node_id, node in cloud.nodes.items():
            cloud.nodes[node_id] = Instance(**{**node.__dict__, "state": "running"})

    spawner._progress.reset()
    collector = asyncio.ensure_future(collect())
    await asyncio.gather(spawner.start(), boots_later())
    await asyncio.wait_for(collector, 5)
    assert len(still_messages()) >= 2, [e["message"] for e in events]
    assert [e["progress"] for e in events] == sorted(e["progress"] for e in events)
    assert events[-1]["progress"] == 95


async def test_rename_retags_the_instance(spawner, cloud):
    await spawner.start()
    await spawner.rename("", "renamed")
    assert cloud.nodes[spawner.instance_id].metadata["jupyterhub-server-name"] == "renamed"


async def test_a_stop_that_cannot_delete_returns_and_the_deletion_goes_on(spawner, cloud, monkeypatch):
    """JupyterHub revokes the server's token only when stop() returns: a failed DELETE must not raise."""
    monkeypatch.setattr("libcloudspawner.deletions.RETRY_FIRST_SECONDS", 0.05)
    await spawner.start()
    instance_id = spawner.instance_id
    real_destroy = cloud.destroy_node

    async def fail(node_id):
        raise CloudError("delete instance failed: 500", transient=True, status=500)

    cloud.destroy_node = fail
    await spawner.stop()
    assert spawner.get_state() == {} and instance_id in cloud.nodes
    assert spawner._deletions().pending_ids() == {instance_id}
    await spawner.start()  # the user starts again meanwhile: a new instance, the leftover left to the retries
    assert spawner.instance_id != instance_id
    cloud.destroy_node = real_destroy
    await asyncio.wait_for(spawner._deletions().task, 5)
    assert list(cloud.nodes) == [spawner.instance_id]
    assert spawner._deletions().pending_ids() == set()


async def test_polls_of_many_servers_share_one_listing(cloud, monkeypatch):
    servers = []
    for n in range(20):
        s = LibcloudSpawner(user=SimpleNamespace(name=f"u{n}"), hub_id="unit", fleet_refresh_seconds=60)
        monkeypatch.setattr(s, "_client", lambda: cloud)
        node = Instance(id=f"n{n}", name=f"jupyter-u{n}", state="running", private_ips=("10.0.0.9",),
                        metadata=dict(s._tags()))  # fmt: skip
        cloud.nodes[node.id] = node
        s.load_state({"instance_id": node.id, "instance_name": node.name, "address": "10.0.0.9"})
        servers.append(s)
    for _ in range(3):
        assert await asyncio.gather(*(s.poll() for s in servers)) == [None] * 20
    assert cloud.calls.count("list_nodes") == 1 and "get_node" not in cloud.calls


async def test_a_server_missing_from_the_listing_is_confirmed_before_it_is_called_gone(spawner, cloud):
    await spawner.start()
    cloud.calls.clear()
    instance = cloud.nodes.pop(spawner.instance_id)
    assert await spawner.poll() == 0  # absent from a listing made after the create, and the cloud says 404
    assert cloud.calls == ["list_nodes", "get_node"]
    cloud.nodes[instance.id] = instance


async def test_a_failed_listing_never_stops_a_running_server(spawner, cloud):
    await spawner.start()
    cloud.get_error = CloudError("list instances failed: 503", transient=True, status=503)
    assert await spawner.poll() is None


async def test_a_failed_listing_is_tried_again_a_period_after_it_started_not_at_every_poll(spawner, cloud):
    from libcloudspawner.fleet import fleet_for

    await spawner.start()
    spawner.fleet_refresh_seconds = 60
    spawner._known_since = 0.0
    cloud.calls.clear()
    cloud.get_error = CloudError("list instances failed: 503", transient=True, status=503)
    for _ in range(5):
        assert await spawner.poll() is None
    assert cloud.calls.count("list_nodes") == 1  # one failed listing for five polls
    view = fleet_for(cloud, "unit", 60)
    view.attempted_at -= 59
    assert await spawner.poll() is None
    assert cloud.calls.count("list_nodes") == 1
    view.attempted_at -= 2  # a period after the failed listing started: tried again, and it answers
    cloud.get_error = None
    assert await spawner.poll() is None
    assert cloud.calls.count("list_nodes") == 2 and "get_node" not in cloud.calls


async def test_a_stopped_servers_late_watch_never_deletes_the_next_spawns_instance(spawner, cloud, monkeypatch):
    """JupyterHub builds a new Spawner after a stop: the old object's watch for a late create must not take
    the new spawn's instance for a late arrival of its own attempt."""
    monkeypatch.setattr("libcloudspawner.provision.LATE_LANDING_CHECKS", (0.2, 0.4))
    cloud.create_error = CreateOutcomeUnknown("connection reset", transient=True)  # made, answer lost: doubtful
    await spawner.start()
    old_watch = spawner._background.late_watch
    assert old_watch is not None
    await spawner.stop()
    cloud.create_error = None
    new = LibcloudSpawner(user=spawner.user, **{k: getattr(spawner, k) for k in (
        "userserver_sizes", "userserver_images", "userserver_net", "hub_id", "startup_poll_interval_seconds",
        "stop_timeout_seconds")})  # fmt: skip
    new._client = lambda: cloud
    new._render_userdata = lambda: "#cloud-config\n"
    await new.start()
    await asyncio.sleep(0.6)  # every check of the old watch is past
    assert list(cloud.nodes) == [new.instance_id]
    assert cloud.nodes[new.instance_id].metadata["jupyterhub-spawn-id"] != ""


async def test_stop_and_clear_state_end_the_watch_bound_to_the_spawner(spawner, cloud):
    cloud.create_error = CreateOutcomeUnknown("connection reset", transient=True)
    await spawner.start()
    watch = spawner._background.late_watch
    await spawner.stop()
    await asyncio.sleep(0)
    assert watch.cancelled()
    assert spawner._background.late_watch is not watch  # the attempt's own late arrivals are still looked for
