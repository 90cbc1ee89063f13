"""Work survives, on the real dev cloud: a home volume (Cinder on Ceph RBD) per user, and each stop mode.

One hub with three profiles, one per `stop_action` (`delete`, `stop`, `shelve`), each with a 1 GiB home volume;
one user per profile, all at once:

1. each user's server boots with its home volume and the user writes a notebook through JupyterLab's contents
   API (through the proxy);
2. the idle culler (added at a hub restart, scoped to these users) stops the three servers: Nova holds no VM of
   the `delete` user, a SHUTOFF VM of the `stop` user, a shelved VM of the `shelve` user; every volume is kept;
3. the users start again (the culler gone at another restart): the `delete` user gets a new VM around the
   kept volume, the other two their own VM back; every notebook is there, and the resumed servers authenticate
   requests through the hub with the tokens they kept;
4. the `stop` user's VM is powered off behind the hub's back (as a compute host's reboot does): the hub finds it
   stopped, the VM is kept, and the next start powers it on with the notebook there;
5. the users are deleted through the hub's API: their VMs and volumes are gone.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid

import pytest
import requests

from testkit.e2e import TAG_HUB_ID, Spawn, servers_of
from testkit.wait import wait_until
from tests.e2e.conftest import doc_config, e2e_hub

pytestmark = pytest.mark.e2e

SPAWN_DEADLINE_S = 1500
MODES = ("delete", "stop", "shelve")
USERS = {mode: f"home-{mode}" for mode in MODES}
NOTEBOOK = "survives.ipynb"
CULL_TIMEOUT_S = 30
#: a user's deletion waits for delete_forever: a kept VM's volume detached, the VM and the volume deleted
DELETE_USER_TIMEOUT_S = 600


def culler(users: list[str]) -> str:
    scopes = [f"{s}!user={u}" for u in users for s in ("list:users", "read:users:activity", "read:servers",
                                                        "delete:servers")]  # fmt: skip
    command = ["-m", "jupyterhub_idle_culler", f"--timeout={CULL_TIMEOUT_S}", "--cull-every=10", "--concurrency=3"]
    role = {"name": "idle-culler", "services": ["idle-culler"], "scopes": scopes}
    return (
        f"c.JupyterHub.services.append({{'name': 'idle-culler', 'command': [sys.executable, *{command!r}]}})\n"
        f"c.JupyterHub.load_roles.append({role!r})\n"
    )


@pytest.fixture(scope="module")
def homes_hub(tmp_path_factory, facts, image, nova, artifacts, ssh_key):
    profiles = [
        {"display_name": f"{mode} at stop", "slug": mode, "size": "j1.small", "image": image["image_name"],
         "overrides": {"stop_action": mode, "home_volume_size_gib": 1}}
        for mode in MODES
    ]  # fmt: skip
    config = {**doc_config(facts, image), "profiles": profiles}
    extra = "c.LibcloudSpawner.poll_interval = 10\n"
    with e2e_hub(tmp_path_factory.mktemp("homes"), facts, config, nova, artifacts, ssh_key, extra, "homes") as h:
        h.base_extra = h.extra_config
        try:
            yield h
        finally:
            forget_all(h, nova)


def forget_all(hub, nova) -> None:
    """Whatever a failed check left: the users deleted (their VMs and volumes with them), then any volume of
    this hub deleted directly."""
    with contextlib.suppress(Exception):
        for user in USERS.values():
            hub.api("DELETE", hub.server_url(user))
        wait_stopped(hub, USERS.values(), 600, "the servers to stop")
    for user in USERS.values():
        with contextlib.suppress(Exception):
            hub.api("DELETE", f"/users/{user}", timeout=DELETE_USER_TIMEOUT_S)
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: not servers_of(nova, hub.hub_id), timeout_s=300, interval_s=5, what="the VMs to go")
    for volume in hub_volumes(nova, hub.hub_id):
        with contextlib.suppress(Exception):
            nova.block_storage.delete_volume(volume["id"], force=True)


def hub_volumes(nova, hub_id: str, user: str | None = None) -> list[dict]:
    r = nova.block_storage.get("/volumes/detail", raise_exc=False)
    volumes = r.json().get("volumes", []) if r.status_code == 200 else []
    return [v for v in volumes if (v.get("metadata") or {}).get(TAG_HUB_ID) == hub_id
            and (user is None or v["metadata"].get("jupyterhub-user") == user)]  # fmt: skip


def notebook(text: str) -> dict:
    cell = {"cell_type": "markdown", "metadata": {}, "source": text}
    return {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 4}


def contents(hub, user: str, method: str = "GET", body: dict | None = None) -> requests.Response:
    return requests.request(method, f"{hub.url}/user/{user}/api/contents/{NOTEBOOK}", json=body, timeout=60,
                            headers={"Authorization": f"token {hub.token}"})  # fmt: skip


def restart(hub, extra: str) -> None:
    hub.extra_config = hub.base_extra + extra
    hub.write_config()
    hub.restart()


def wait_stopped(hub, users, timeout_s: float, what: str) -> None:
    wait_until(lambda: all(hub.spawner_model(u) is None for u in users), timeout_s=timeout_s, interval_s=3,
               what=what)  # fmt: skip


def start_all(hub) -> dict[str, Spawn]:
    spawns = {mode: Spawn(hub, USERS[mode], options={"profile": mode}).start() for mode in MODES}
    for spawn in spawns.values():
        spawn.wait(SPAWN_DEADLINE_S)
    return spawns


def nova_status(nova, server_id: str) -> str | None:
    server = nova.compute.find_server(server_id, ignore_missing=True)
    return server.status if server else None


@pytest.fixture(scope="module")
def written(homes_hub, nova):
    """Step 1: three servers, each with its home volume and a notebook; the VMs they run on."""
    spawns = start_all(homes_hub)
    homes_hub.timings["first_start_s"] = {m: round(s.seconds, 1) for m, s in spawns.items()}
    marks = {}
    for mode, user in USERS.items():
        marks[mode] = f"kept by {mode}: {uuid.uuid4().hex}"
        r = contents(homes_hub, user, "PUT", {"type": "notebook", "content": notebook(marks[mode])})
        assert r.status_code in (200, 201), (user, r.status_code, r.text[:300])
    vms = {mode: [s.id for s in servers_of(nova, homes_hub.hub_id, USERS[mode])] for mode in MODES}
    volumes = {mode: [v["id"] for v in hub_volumes(nova, homes_hub.hub_id, USERS[mode])] for mode in MODES}
    return marks, vms, volumes


def test_each_user_boots_with_one_home_volume(written, nova, homes_hub):
    _, vms, volumes = written
    assert all(len(v) == 1 for v in vms.values()), vms
    assert all(len(v) == 1 for v in volumes.values()), volumes
    for mode in MODES:
        attached = nova.compute.volume_attachments(vms[mode][0])
        assert volumes[mode][0] in {a.volume_id for a in attached}, (mode, list(attached))


def test_the_culler_stops_each_mode_as_configured(written, nova, homes_hub):
    _, vms, volumes = written
    started = time.monotonic()
    restart(homes_hub, culler(list(USERS.values())))
    wait_stopped(homes_hub, USERS.values(), CULL_TIMEOUT_S + 600, "the idle culler to stop the three servers")
    homes_hub.timings["culled_s"] = round(time.monotonic() - started, 1)
    restart(homes_hub, "")  # no culler for the starts that follow
    wait_until(lambda: nova_status(nova, vms["delete"][0]) is None, timeout_s=240, interval_s=3,
               what="the delete-mode VM to be gone")  # fmt: skip
    assert nova_status(nova, vms["stop"][0]) == "SHUTOFF"
    assert nova_status(nova, vms["shelve"][0]) in ("SHELVED", "SHELVED_OFFLOADED")
    for mode in MODES:
        (volume,) = hub_volumes(nova, homes_hub.hub_id, USERS[mode])
        # a shelved-offloaded VM's volume stays attached to it in Cinder as "reserved" (no host connection)
        assert volume["id"] == volumes[mode][0] and volume["status"] in ("available", "in-use", "reserved"), (
            mode, volume)  # fmt: skip


def test_every_notebook_is_there_after_the_next_start(written, nova, homes_hub):
    marks, vms, volumes = written
    spawns = start_all(homes_hub)
    homes_hub.timings["second_start_s"] = {m: round(s.seconds, 1) for m, s in spawns.items()}
    for mode, user in USERS.items():
        r = contents(homes_hub, user)
        assert r.status_code == 200, (user, r.status_code, r.text[:300])  # the hub's OAuth through the proxy
        assert json.dumps(marks[mode]) in json.dumps(r.json()["content"]), (mode, r.text[:300])
        (vm,) = servers_of(nova, homes_hub.hub_id, user)
        if mode == "delete":
            assert vm.id != vms[mode][0]  # a new VM around the kept volume
        else:
            assert vm.id == vms[mode][0]  # the same VM, resumed with the token it kept
        assert [v["id"] for v in hub_volumes(nova, homes_hub.hub_id, user)] == volumes[mode]


def test_a_vm_powered_off_behind_the_hubs_back_is_kept_and_resumed(written, nova, homes_hub):
    marks, vms, _ = written
    user = USERS["stop"]
    nova.compute.stop_server(vms["stop"][0])
    wait_stopped(homes_hub, [user], 300, "the hub to find the powered-off server stopped")
    assert nova_status(nova, vms["stop"][0]) == "SHUTOFF"
    spawn = Spawn(homes_hub, user, options={"profile": "stop"}).start()
    spawn.wait(SPAWN_DEADLINE_S)
    homes_hub.timings["resume_after_power_off_s"] = round(spawn.seconds, 1)
    assert [s.id for s in servers_of(nova, homes_hub.hub_id, user)] == vms["stop"]
    r = contents(homes_hub, user)
    assert r.status_code == 200 and json.dumps(marks["stop"]) in json.dumps(r.json()["content"]), r.text[:300]


def test_deleting_the_users_deletes_their_vms_and_volumes(written, nova, homes_hub):
    for user in USERS.values():
        homes_hub.api("DELETE", homes_hub.server_url(user))
    wait_stopped(homes_hub, USERS.values(), 600, "the servers to stop")
    for user in USERS.values():
        r = homes_hub.api("DELETE", f"/users/{user}", timeout=DELETE_USER_TIMEOUT_S)
        assert r.status_code == 204, (user, r.status_code, r.text[:300])
    wait_until(lambda: not servers_of(nova, homes_hub.hub_id) and not hub_volumes(nova, homes_hub.hub_id),
               timeout_s=300, interval_s=5, what="the users' VMs and volumes to be gone")  # fmt: skip
