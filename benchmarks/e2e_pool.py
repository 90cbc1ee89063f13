"""The warm pool on the real dev cloud, side by side in one run: the bare boot floor, a cold spawn, a pooled
spawn, the single-user server's own start on a booted VM, and a burst of N logins at once with a pool of N.

One JupyterHub + proxy + LibcloudSpawner (hub id ``bench-<pid>``, ``make_hub`` of ``benchmarks.e2e_spawn``) and
two profiles of the same image and size: ``cold`` (never pooled) and ``pooled`` (``warm_pool`` of N). Each
spawn is timed from the REST spawn request to the hub's progress stream reporting the server ready. In order:

- ``bare``: the floor, create to SSH banner of the same image with no user-data (openstacksdk, no hub);
- ``cold``: a spawn of the ``cold`` profile, the hub without a pool (nothing else booting);
- ``own_start``: on that served VM, over SSH (the run's own key pair, the image's default account):
  ``systemctl restart jupyterhub-singleuser`` until the server's ``/user/<name>/api`` answers 200 on the VM,
  timed on the VM, with the page cache as the running server left it (``warm``) and dropped first (``cold``:
  a server's first start on a VM that never ran Jupyter, as on a pool VM);
- ``pooled``: the hub restarted with the pool (``warm_at_hub_start``); once its N VMs' agents answer, a spawn
  of the ``pooled`` profile; then ``own_start`` again on that VM (``pooled_own_start``); its timeline
  (claim, retag, hand-over, Jupyter answering, ready) from the hub's log;
- ``burst``: the pool full again, N users' spawn requests at once: per user spawn-to-ready and whether it took
  the pool path, max and median;
- ``drain``: the hub restarted with ``warm_pool = []`` (and ``warm_at_hub_start``): seconds until its idle
  pool VMs are deleted.

Every timed spawn records the run's VMs that were booting meanwhile (a pool refills while its VMs are taken;
on a single-node cloud those boots share the host's cores). Ratios are to the floor of the same run. At most
``2N`` instances at once (N pool VMs, N served, while the pool refills). At the end the hub is stopped and every
instance tagged with the run's hub id is deleted, and the key pair; the results name what was deleted.

    python -m benchmarks.e2e_pool --burst 3

Prerequisites: `invoke devcloud up`, `invoke publish-image --cloud devcloud`. Every wait has a deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from benchmarks.e2e_resume import AGENT_PORT, POOL_TAG, agent_answers, delete_leftovers
from benchmarks.e2e_spawn import REPO, bare_boot, finish, make_hub, report
from testkit.e2e import Spawn, connect_nova, devcloud_facts, published_image, servers_of
from testkit.wait import wait_until

SPAWN_DEADLINE_S = 1500
UNIT = "jupyterhub-singleuser.service"
# run on the VM as root: restart the server's unit, then probe its API on the VM until it answers 200
OWN_START = r"""
set -eu
path=$1 cache=$2
probe() {
  exec 3<>/dev/tcp/127.0.0.1/8000 || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
  line=""
  read -r -t 10 line <&3 || true
  exec 3<&-
  case "$line" in "HTTP/1."?" 200"*) return 0 ;; esac
  return 1
}
systemctl stop @UNIT@
if [ "$cache" = cold ]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi
t0=$(date +%s.%N)
systemctl start @UNIT@
t1=$(date +%s.%N)
n=0
until probe 2>/dev/null; do
  n=$((n + 1))
  [ "$n" -lt 3000 ] || { echo "no answer"; exit 1; }
  sleep 0.1
done
t2=$(date +%s.%N)
echo "OWNSTART $t0 $t1 $t2"
""".replace("@UNIT@", UNIT)
# the hub's log line prefix: [I 2026-12-05 14:20:00.123 JupyterHub module:line]
LOG_TIME = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) ")
TIMELINE = {  # progress messages of a pooled start, in order (their first words)
    "claim": "Looking for a VM in the warm pool",
    "took": "Took VM ",
    "handed_over": "Your server is starting on the VM from the warm pool",
    "answering": "Jupyter is answering",
}


@contextlib.contextmanager
def keypair(conn, name: str):
    """A Nova key pair for this run (the spawner's ``userserver_keyname``): its name and private key path."""
    directory = Path(tempfile.mkdtemp(prefix="lcs-bench-pool-ssh-"))
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    conn.compute.create_keypair(name=name, public_key=(directory / "id_ed25519.pub").read_text().strip())
    try:
        yield name, key
    finally:
        conn.compute.delete_keypair(name, ignore_missing=True)


def own_start(key: Path, address: str, user: str, cache: str) -> dict:
    """The server's own start on its VM (seconds, timed on the VM): unit start returned, API answering."""
    r = subprocess.run(
        ["ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "ConnectTimeout=30", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", f"debian@{address}",
         "sudo", "bash", "-s", "--", f"/user/{user}/api", cache],
        input=OWN_START, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    found = re.search(r"OWNSTART (\S+) (\S+) (\S+)", r.stdout)
    if r.returncode != 0 or not found:
        raise RuntimeError(f"own start on {address} failed ({r.returncode}): {r.stdout[-500:]} {r.stderr[-500:]}")
    t0, t1, t2 = (float(x) for x in found.groups())
    return {"cache": cache, "unit_started_s": round(t1 - t0, 2), "answering_s": round(t2 - t0, 2)}


def address_of(hub, user: str) -> str:
    return hub.spawner_model(user)["state"]["address"]


def booting(conn, hub_id: str) -> int:
    return sum(1 for s in servers_of(conn, hub_id) if s.status == "BUILD")


def pool_ready(conn, hub_id: str, count: int) -> list:
    vms = [s for s in servers_of(conn, hub_id) if POOL_TAG in (s.metadata or {}) and s.status == "ACTIVE"]
    ready = [s for s in vms if agent_answers(s)]
    return ready if len(ready) >= count else []


def timeline(hub, user: str, since: float) -> dict:
    """Seconds from the spawn request (wall clock ``since``) to each step of a pooled start, from the hub's log."""
    found: dict[str, float] = {}
    for line in hub.log_text().splitlines():
        stamp = LOG_TIME.match(line)
        if not stamp or f"] {user}: " not in line:
            continue
        at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        if at < since:
            continue
        for step, text in TIMELINE.items():
            if step not in found and text in line:
                found[step] = round(at - since, 2)
    return found


def spawn_at_once(hub, users: list[str], profile: str) -> list[Spawn]:
    """Every user's spawn request sent at the same time (one thread each); the spawns, all waited for."""
    spawns = [Spawn(hub, u, options={"profile": profile}, deadline_s=SPAWN_DEADLINE_S) for u in users]
    with ThreadPoolExecutor(len(spawns)) as pool:
        list(pool.map(lambda s: s.start(), spawns))
    for spawn in spawns:
        spawn.wait(SPAWN_DEADLINE_S)
    return spawns


def stop(hub, users: list[str]) -> None:
    for name in users:
        hub.api("DELETE", hub.server_url(name))
    for name in users:
        hub.wait_gone(name, timeout_s=900)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=3, help="N: the pool's size and the users logging in at once")
    parser.add_argument("--notes", default="", help="free text kept in the results (e.g. what else ran meanwhile)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    n = args.burst
    facts = devcloud_facts()
    conn = connect_nova(facts)
    image = published_image(conn)
    hub_id = f"bench-{os.getpid()}"
    results: dict = {"image": image["name"], "hub_id": hub_id, "burst_users": n, "notes": args.notes,
                     "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"e2e_pool-{time.strftime('%Y%m%dT%H%M%S')}.json"

    def load() -> float:
        return round(os.getloadavg()[0], 1)

    def save() -> None:
        floor = results.get("bare_s")
        if floor:
            ratios = {m: results[f"{m}_s"] for m in ("cold", "pooled") if f"{m}_s" in results}
            if "burst" in results:
                ratios["burst_max"], ratios["burst_median"] = results["burst"]["max_s"], results["burst"]["median_s"]
            results["over_bare"] = {m: round(v / floor, 2) for m, v in ratios.items()}
        path.write_text(json.dumps(results, indent=2) + "\n")

    def timed(user: str, profile: str) -> Spawn:
        before = booting(conn, hub_id)
        [spawn] = spawn_at_once(hub, [user], profile)
        results.setdefault("booting_meanwhile", {})[user] = [before, booting(conn, hub_id)]
        return spawn

    with keypair(conn, f"lcs-bench-pool-{os.getpid()}") as (keyname, key):
        results["bare_s"] = round(bare_boot(conn, facts, image["image_id"], deadline_s=900), 1)
        results["bare_load"] = load()
        print("bare", results["bare_s"], flush=True)
        save()
        profiles = [
            {"display_name": "Cold", "slug": "cold", "size": "j1.small", "image": image["image_name"], "default": True},
            {"display_name": "Pooled", "slug": "pooled", "size": "j1.small", "image": image["image_name"]},
        ]
        base = f"""
c.LibcloudSpawner.security_groups = [{facts["server_security_group"]!r}]
c.LibcloudSpawner.userserver_keyname = {keyname!r}
c.LibcloudSpawner.stop_timeout_seconds = 600
c.LibcloudSpawner.poll_interval = 10
c.LibcloudSpawner.pool_agent_port = {AGENT_PORT}
c.LibcloudSpawner.pool_handoff_timeout_seconds = 120
c.LibcloudSpawner.fleet_refresh_seconds = 5
"""
        pool_on = f"""
c.LibcloudSpawner.warm_pool = [{{'profile': 'pooled', 'min': {n}, 'max': {n}}}]
from libcloudspawner.pool import warm_at_hub_start
warm_at_hub_start(c)
"""
        work = Path(tempfile.mkdtemp(prefix="lcs-bench-pool-"))
        hub = make_hub(facts, work / "hub", [(image["display_name"], image["image_name"])], None, base, profiles)
        base_extra = hub.extra_config
        users: list[str] = []
        try:
            # cold spawn, nothing else booting; then the server's own start on that VM
            users.append("cold")
            spawn = timed("cold", "cold")
            results["cold_s"], results["cold_load"] = round(spawn.seconds, 1), load()
            print("cold", results["cold_s"], flush=True)
            address = address_of(hub, "cold")
            results["own_start"] = [own_start(key, address, "cold", "warm"), own_start(key, address, "cold", "cold")]
            results["own_start_load"] = load()
            print("own start", results["own_start"], flush=True)
            save()
            stop(hub, ["cold"])

            # the pool: the hub restarted with it, N VMs booted, then one pooled spawn
            hub.extra_config = base_extra + pool_on
            hub.write_config()
            started = time.monotonic()
            hub.restart()
            wait_until(lambda: pool_ready(conn, hub_id, n), timeout_s=SPAWN_DEADLINE_S, interval_s=5,
                       what=f"{n} pool VMs whose agent answers")  # fmt: skip
            results["pool_fill_s"] = round(time.monotonic() - started, 1)
            time.sleep(10)  # two fleet refreshes: the hub lists them ready
            users.append("pooled")
            since = time.time()
            spawn = timed("pooled", "pooled")
            messages = [e.get("message", "") for e in spawn.events]
            results["pooled_s"], results["pooled_load"] = round(spawn.seconds, 1), load()
            results["pooled_from_pool"] = any("from the warm pool" in m for m in messages)
            results["pooled_timeline_s"] = timeline(hub, "pooled", since)
            print("pooled", results["pooled_s"], results["pooled_timeline_s"], flush=True)
            address = address_of(hub, "pooled")
            results["pooled_own_start"] = [own_start(key, address, "pooled", "cold"),
                                           own_start(key, address, "pooled", "warm")]  # fmt: skip
            results["pooled_own_start_load"] = load()
            print("pooled own start", results["pooled_own_start"], flush=True)
            save()
            stop(hub, ["pooled"])

            # the burst: the pool full again, N users at once
            started = time.monotonic()
            wait_until(lambda: pool_ready(conn, hub_id, n), timeout_s=SPAWN_DEADLINE_S, interval_s=5,
                       what=f"{n} pool VMs whose agent answers")  # fmt: skip
            results["pool_refill_wait_s"] = round(time.monotonic() - started, 1)
            time.sleep(10)
            burst = [f"burst{i}" for i in range(n)]
            users += burst
            before = booting(conn, hub_id)
            since = time.time()
            spawns = spawn_at_once(hub, burst, "pooled")
            times = [round(s.seconds, 1) for s in spawns]
            results["burst"] = {
                "users": {s.user: {"s": round(s.seconds, 1),
                                   "from_pool": any("from the warm pool" in e.get("message", "") for e in s.events),
                                   "timeline_s": timeline(hub, s.user, since)} for s in spawns},
                "max_s": max(times), "median_s": round(statistics.median(times), 1), "load": load(),
                "booting_meanwhile": [before, booting(conn, hub_id)],
            }  # fmt: skip
            print("burst", results["burst"], flush=True)
            save()
            stop(hub, burst)

            # the pool switched off (warm_at_hub_start kept): its idle VMs drained by the hub at its start
            hub.extra_config = base_extra + "from libcloudspawner.pool import warm_at_hub_start\nwarm_at_hub_start(c)\n"
            hub.write_config()
            started = time.monotonic()
            hub.restart()
            pool_left = lambda: [s for s in servers_of(conn, hub_id) if POOL_TAG in (s.metadata or {})]  # noqa: E731
            wait_until(lambda: not pool_left(), timeout_s=600, interval_s=3, what="the pool drained")
            results["drain_s"] = round(time.monotonic() - started, 1)
            print("drain", results["drain_s"], flush=True)
        finally:
            with contextlib.suppress(Exception):
                stop(hub, users)
            for name in users:
                with contextlib.suppress(Exception):
                    hub.api("DELETE", f"/users/{name}")
            hub.stop()
            delete_leftovers(conn, hub_id, results)
            results["remaining"] = [s.name for s in servers_of(conn, hub_id)]
            finish(results, save)
    return report(results, path)


if __name__ == "__main__":
    raise SystemExit(main())
