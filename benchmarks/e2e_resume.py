"""Start-to-ready of a returning user on the real dev cloud, each way a server can come back, side by side in one run.

One JupyterHub + proxy + LibcloudSpawner (hub id ``bench-<pid>``) carries every mode through profiles with
``overrides``; each time is from the REST spawn request to the hub's progress stream reporting the server
ready (the single-user server answering on the VM):

- ``fresh``: a cold boot of the project's image (the ``ours`` mode of ``benchmarks.e2e_spawn``);
- ``volume``: a cold boot around an existing 1 GiB home volume (``home_volume_size_gib = 1``, ``stop_action =
  "delete"``): the first start creates the volume and is not timed, the stop deletes the VM, the timed second
  start boots a new VM with the kept volume;
- ``resume``: ``stop_action = "stop"``: the timed second start powers the kept VM on;
- ``unshelve``: ``stop_action = "shelve"``: the timed second start unshelves the kept VM;
- ``pool``: a warm pool of one (``warm_pool``, ``pool_agent_port = 9443``, ``warm_at_hub_start``), timed from
  the spawn request once the pool VM's agent answers;
- ``bare``: the floor, create to SSH banner of the same image with no user-data (openstacksdk, no hub).

Each mode is reported in seconds and as a ratio to the floor of the same run. The first starts of ``volume``,
``resume`` and ``unshelve`` run at once (untimed); the timed starts run one at a time. At the end the users are
deleted through the hub's API (``delete_forever`` deletes kept VMs and home volumes), the hub is stopped, and
Nova and Cinder are checked for anything tagged with the run's hub id (deleted, and named in the results).

    python -m benchmarks.e2e_resume

Prerequisites: `invoke devcloud up`, `invoke publish-image --cloud devcloud`. Every wait has a deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path

from benchmarks.e2e_spawn import REPO, bare_boot, finish, make_hub, report, spawn_many
from testkit.e2e import TAG_HUB_ID, Spawn, connect_nova, devcloud_facts, published_image, servers_of
from testkit.wait import wait_until

MODES = ("fresh", "volume", "resume", "unshelve", "pool", "bare")
KEPT = {"volume": {"stop_action": "delete", "home_volume_size_gib": 1}, "resume": {"stop_action": "stop"},
        "unshelve": {"stop_action": "shelve"}}  # fmt: skip
POOL_PROFILE = "pooled"
POOL_TAG = "jupyterhub-pool-member"
AGENT_PORT = 9443
SPAWN_DEADLINE_S = 1500
STOP_DEADLINE_S = 900


def user(mode: str) -> str:
    return f"bench-{mode}"


def hub_volumes(conn, hub_id: str) -> list[dict]:
    r = conn.block_storage.get("/volumes/detail", raise_exc=False)
    volumes = r.json().get("volumes", []) if r.status_code == 200 else []
    return [v for v in volumes if (v.get("metadata") or {}).get(TAG_HUB_ID) == hub_id]


def agent_answers(server) -> bool:
    addresses = [a["addr"] for net in server.addresses.values() for a in net if a.get("version", 4) == 4]
    with contextlib.suppress(OSError, IndexError), socket.create_connection((addresses[0], AGENT_PORT), timeout=3):
        return True
    return False


def ready_pool_vm(conn, hub_id: str):
    vms = [s for s in servers_of(conn, hub_id) if POOL_TAG in (s.metadata or {}) and s.status == "ACTIVE"]
    return vms[0] if vms and agent_answers(vms[0]) else None


def timed_start(hub, mode: str, profile: str) -> tuple[float, list[str]]:
    spawn = Spawn(hub, user(mode), options={"profile": profile}, deadline_s=SPAWN_DEADLINE_S).start()
    spawn.wait(SPAWN_DEADLINE_S)
    return round(spawn.ready_at - spawn.started, 1), [e.get("message", "") for e in spawn.events]


def stop(hub, users: list[str]) -> None:
    for name in users:
        hub.api("DELETE", hub.server_url(name))
    for name in users:
        hub.wait_gone(name, timeout_s=STOP_DEADLINE_S)


def delete_leftovers(conn, hub_id: str, results: dict) -> None:
    """Once the hub is stopped: delete what is left of its hub id (its pool VMs, or a leak, recorded apart) and
    wait, bounded, until Nova holds none."""
    leftovers = servers_of(conn, hub_id)
    for server in leftovers:
        conn.compute.delete_server(server, ignore_missing=True)
    results["pool_vms_deleted"] = [s.name for s in leftovers if POOL_TAG in (s.metadata or {})]
    results["leftovers_deleted"] = [s.name for s in leftovers if POOL_TAG not in (s.metadata or {})]
    with contextlib.suppress(Exception):
        wait_until(lambda: not servers_of(conn, hub_id), timeout_s=300, interval_s=5, what="the VMs to go")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notes", default="", help="free text kept in the results (e.g. what else ran meanwhile)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    facts = devcloud_facts()
    conn = connect_nova(facts)
    image = published_image(conn)
    hub_id = f"bench-{os.getpid()}"
    results: dict = {"image": image["name"], "hub_id": hub_id, "notes": args.notes, "cpus": os.cpu_count(),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "modes": list(MODES)}  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"e2e_resume-{time.strftime('%Y%m%dT%H%M%S')}.json"

    def record(mode: str, seconds: float) -> None:
        results[f"{mode}_s"] = seconds
        results[f"{mode}_load"] = round(os.getloadavg()[0], 1)
        print(mode, seconds, flush=True)
        save()

    def save() -> None:
        floor = results.get("bare_s")
        if floor:
            results["over_bare"] = {m: round(results[f"{m}_s"] / floor, 2) for m in MODES if f"{m}_s" in results}
        path.write_text(json.dumps(results, indent=2) + "\n")

    record("bare", round(bare_boot(conn, facts, image["image_id"], deadline_s=900), 1))

    profiles = [
        {"display_name": "Fresh", "slug": "fresh", "size": "j1.small", "image": image["image_name"], "default": True},
        {"display_name": "Pooled", "slug": POOL_PROFILE, "size": "j1.small", "image": image["image_name"]},
    ]
    profiles += [{"display_name": mode, "slug": mode, "size": "j1.small", "image": image["image_name"],
                  "overrides": overrides} for mode, overrides in KEPT.items()]  # fmt: skip
    extra = f"""
c.LibcloudSpawner.security_groups = [{facts["server_security_group"]!r}]
c.LibcloudSpawner.stop_timeout_seconds = 600
c.LibcloudSpawner.poll_interval = 10
c.LibcloudSpawner.warm_pool = [{{'profile': {POOL_PROFILE!r}, 'min': 1, 'max': 1}}]
c.LibcloudSpawner.pool_agent_port = {AGENT_PORT}
c.LibcloudSpawner.pool_handoff_timeout_seconds = 120
c.LibcloudSpawner.fleet_refresh_seconds = 5
from libcloudspawner.pool import warm_at_hub_start
warm_at_hub_start(c)
"""
    work = Path(tempfile.mkdtemp(prefix="lcs-bench-resume-"))
    hub = make_hub(facts, work / "hub", [(image["display_name"], image["image_name"])], None, extra, profiles)
    try:
        # the first starts (not timed), at once; the pool VM boots meanwhile
        spawns = [Spawn(hub, user(m), options={"profile": m}, deadline_s=SPAWN_DEADLINE_S).start() for m in KEPT]
        for spawn in spawns:
            spawn.wait(SPAWN_DEADLINE_S)
        results["first_start_s"] = {m: round(s.ready_at - s.started, 1) for m, s in zip(KEPT, spawns, strict=True)}
        first_vms = {m: [s.id for s in servers_of(conn, hub_id, user(m))] for m in KEPT}
        started = time.monotonic()
        stop(hub, [user(m) for m in KEPT])
        results["stop_s"] = round(time.monotonic() - started, 1)
        wait_until(lambda: not servers_of(conn, hub_id, user("volume")), timeout_s=300, interval_s=3,
                   what="the delete-mode VM to be gone")  # fmt: skip
        results["kept"] = {m: [s.status for s in servers_of(conn, hub_id, user(m))] for m in KEPT}
        results["kept"]["volumes"] = [v["status"] for v in hub_volumes(conn, hub_id)]
        print("kept", results["kept"], flush=True)
        save()

        # the timed starts, one at a time
        record("fresh", round(spawn_many(hub, [user("fresh")], SPAWN_DEADLINE_S)[0], 1))
        same_vm = {}
        for mode in KEPT:
            seconds, _ = timed_start(hub, mode, mode)
            same_vm[mode] = [s.id for s in servers_of(conn, hub_id, user(mode))] == first_vms[mode]
            record(mode, seconds)
        results["same_vm_as_first_start"] = same_vm

        started = time.monotonic()
        wait_until(lambda: ready_pool_vm(conn, hub_id), timeout_s=SPAWN_DEADLINE_S, interval_s=5,
                   what="a pool VM whose agent answers")  # fmt: skip
        results["pool_vm_wait_s"] = round(time.monotonic() - started, 1)
        seconds, messages = timed_start(hub, "pool", POOL_PROFILE)
        results["pool_served_from_pool"] = any("from the warm pool" in m for m in messages)
        record("pool", seconds)
    finally:
        users = [user(m) for m in MODES if m != "bare"]
        with contextlib.suppress(Exception):
            stop(hub, users)
        for name in users:
            with contextlib.suppress(Exception):
                r = hub.api("DELETE", f"/users/{name}")
                results.setdefault("users_deleted", {})[name] = r.status_code
        with contextlib.suppress(Exception):  # delete_forever: the kept VMs and the home volume go
            wait_until(lambda: not [s for s in servers_of(conn, hub_id) if POOL_TAG not in (s.metadata or {})]
                       and not hub_volumes(conn, hub_id), timeout_s=600, interval_s=5,
                       what="the users' VMs and volumes to be gone")  # fmt: skip
        hub.stop()  # a stopped hub refills nothing: what is left of the hub id now is the pool's, or a leak
        delete_leftovers(conn, hub_id, results)
        volumes = hub_volumes(conn, hub_id)
        for volume in volumes:
            with contextlib.suppress(Exception):
                conn.block_storage.delete_volume(volume["id"], force=True)
        results["leftover_volumes_deleted"] = [v["id"] for v in volumes]
        results["remaining"] = {"servers": [s.name for s in servers_of(conn, hub_id)],
                                "volumes": [v["id"] for v in hub_volumes(conn, hub_id)]}  # fmt: skip
        finish(results, save)
    return report(results, path)


if __name__ == "__main__":
    raise SystemExit(main())
