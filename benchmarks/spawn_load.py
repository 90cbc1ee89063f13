"""Hub event-loop lag and cloud API calls per spawn, with N spawns at once against the API double.

Side by side in one run: the hub's own floor (a spawner that makes no cloud call, `floor_spawner.py`),
LibcloudSpawner (every libcloud call in an executor) and a naive variant that calls libcloud directly in
the coroutine (the original project's pattern). All run inside a real
JupyterHub process with its real proxy; the loop-lag probe runs in the hub's own event loop (installed
from the hub's config file): it sleeps 10 ms again and again and records how late it wakes up.
The double answers every API call after `--latency` seconds and, in its `--no-run` mode, answers the
single-user HTTP checks with a stand-in, so 100 "VMs" cost no Jupyter processes.

    python -m benchmarks.spawn_load --spawns 100 --naive-spawns 25 --latency 1.0 --out benchmarks/results

`--stagger-ms N` spreads the spawn requests N ms apart instead of sending them all at once.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from testkit.hub import PASSWORD, Hub, original_config
from testkit.localhost import free_port
from testkit.osdouble.fixture import running_double
from testkit.wait import wait_until

REPO = Path(__file__).resolve().parents[1]

LAG_PROBE = """
import asyncio as _asyncio, time as _time
_LAG_FILE = {path!r}
async def _lag_probe(interval=0.01):
    samples, flushed = [], _time.monotonic()
    while True:
        t0 = _time.perf_counter()
        await _asyncio.sleep(interval)
        samples.append('%.3f %.6f\\n' % (_time.time(), _time.perf_counter() - t0 - interval))
        if _time.monotonic() - flushed > 0.5:
            with open(_LAG_FILE, 'a') as f:
                f.write(''.join(samples))
            samples.clear()
            flushed = _time.monotonic()
_lag_probe_task = _asyncio.get_running_loop().create_task(_lag_probe())
"""


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


STANDIN = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header('Content-Type', 'application/json'); self.end_headers()
        self.wfile.write(b'{}')
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
"""


def run_variant(
    name: str, spawner_class: str, spawns: int, latency: float, workdir: Path, stagger_s: float = 0.0
) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    lag_file = workdir / "lag.txt"
    port = free_port()
    floor_port = free_port()
    # the floor variant's "VM": one process answering every request (the double is idle then)
    standin = subprocess.Popen([sys.executable, "-c", STANDIN, str(floor_port)]) if "Floor" in spawner_class else None
    try:
        return _run_variant(name, spawner_class, spawns, latency, workdir, stagger_s, lag_file, port, floor_port)
    finally:
        if standin is not None:
            standin.terminate()
            standin.wait(timeout=10)


def _run_variant(
    name: str,
    spawner_class: str,
    spawns: int,
    latency: float,
    workdir: Path,
    stagger_s: float,
    lag_file: Path,
    port: int,
    floor_port: int,
) -> dict:
    with running_double(workdir, latency=latency, no_run=True, standin_port=port) as double:
        identity = double.client.catalogue()["identity"]
        identity["user"]["password"] = PASSWORD
        double.client.set_catalogue(identity=identity)
        extra = "\n".join(
            [
                LAG_PROBE.format(path=str(lag_file)),
                f"c.JupyterHub.spawner_class = {spawner_class!r}",
                "c.JupyterHub.concurrent_spawn_limit = 0",
                "c.JupyterHub.log_level = 'INFO'",
                "c.LibcloudSpawner.api_timeout_seconds = 120",
                "c.LibcloudSpawner.startup_poll_interval_seconds = 1.0",
                f"c.FloorSpawner.latency_seconds = {latency!r}",
                f"c.FloorSpawner.standin_url = 'http://127.0.0.1:{floor_port}'",
            ]
        )
        hub = Hub(workdir, double, original_config(double.url), extra_config=extra)
        hub.singleuser_port = port
        hub.write_config()
        hub.start()
        try:
            users = [f"bench{i:03d}" for i in range(spawns)]
            r = hub.api("POST", "/users", json={"usernames": users})
            assert r.status_code in (201, 409), r.text
            double.client.clear_calls()
            t_start = time.time()

            def post(index_user: tuple[int, str]):
                index, user = index_user
                time.sleep(max(0.0, t_start + index * stagger_s - time.time()))
                try:
                    return hub.api("POST", f"/users/{user}/server").status_code
                except requests.RequestException:
                    return "no answer in 30 s"  # the hub's loop was too busy to answer: part of the result

            with ThreadPoolExecutor(max_workers=32) as pool:
                statuses = list(pool.map(post, enumerate(users)))
            if not all(s in (201, 202, "no answer in 30 s") for s in statuses):
                raise SystemExit(f"spawn requests failed: {statuses}\n{hub.log_tail(80)}")

            def all_ready():
                # read the hub's log rather than its API: polling the REST API would load the very event
                # loop being measured (listing 100 users costs the hub hundreds of milliseconds)
                return hub.log_text().count("seconds to start") >= spawns

            wait_until(all_ready, timeout_s=max(600, spawns * latency * 12), interval_s=1.0, what="all servers ready")
            t_end = time.time()
            counts = double.client.call_counts()
            calls = double.client.calls()
        finally:
            hub.stop()
    samples = []
    for line in lag_file.read_text().splitlines():
        ts, lag = line.split()
        if t_start <= float(ts) <= t_end:
            samples.append(float(lag) * 1000)
    by_route = counts.get("by_route", {})
    polls = by_route.get("GET /v2.1/servers/{id}", 0) - by_route.get("POST /v2.1/servers", 0)
    total = counts.get("total", len(calls))
    return {
        "variant": name,
        "spawns": spawns,
        "latency_s": latency,
        "stagger_ms": round(stagger_s * 1000),
        "wall_s": round(t_end - t_start, 1),
        "spawn_requests_unanswered": sum(1 for s in statuses if not isinstance(s, int)),
        "lag_ms": {
            "samples": len(samples),
            "p50": round(statistics.median(samples), 2) if samples else None,
            "p99": round(percentile(samples, 99), 2),
            "max": round(max(samples), 2) if samples else None,
            # the loop's total lateness in the window: independent of how long the window is, so variants
            # that finish at different speeds compare fairly (the floor packs the same hub work into less time)
            "total_s": round(sum(samples) / 1000, 2),
            "over_20ms": sum(1 for x in samples if x > 20),
        },
        "api_calls": {
            "total": total,
            "by_route": by_route,
            "polls": polls,
            "per_spawn_excluding_polls": round((total - polls) / spawns, 2),
            "polls_per_spawn": round(polls / spawns, 2),
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spawns", type=int, default=100)
    p.add_argument("--naive-spawns", type=int, default=25, help="the naive variant serialises every call")
    p.add_argument("--floor-spawns", type=int, default=None, help="spawns of the no-cloud floor (default: --spawns)")
    p.add_argument("--stagger-ms", type=float, default=0.0, help="delay between spawn requests (default: all at once)")
    p.add_argument("--latency", type=float, default=1.0, help="seconds the double waits before each answer")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    # SIGTERM ends the run through the finally blocks: the hub, its proxy and the double are stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="lcs-bench-") as tmp:
        floor_spawns = args.spawns if args.floor_spawns is None else args.floor_spawns
        variants = [
            ("floor (hub only, no cloud calls)", "benchmarks.floor_spawner.FloorSpawner", floor_spawns),
            ("executor (LibcloudSpawner)", "libcloudspawner.spawner.LibcloudSpawner", args.spawns),
            ("naive (libcloud in the coroutine)", "benchmarks.naive_spawner.NaiveLibcloudSpawner", args.naive_spawns),
        ]
        for name, cls, n in variants:
            if n <= 0:
                continue
            print(f"--- {name}: {n} spawns at once, {args.latency}s per API call", flush=True)
            res = run_variant(name, cls, n, args.latency, Path(tmp) / cls.rsplit(".", 1)[-1], args.stagger_ms / 1000)
            print(json.dumps(res, indent=1), flush=True)
            results.append(res)
    p99 = {r["variant"].split()[0]: r["lag_ms"]["p99"] for r in results}
    if p99.get("executor") and p99.get("naive"):
        print(f"p99 loop lag, naive / executor: {p99['naive'] / p99['executor']:.0f}x")
    total = {r["variant"].split()[0]: r["lag_ms"]["total_s"] for r in results}
    if total.get("executor") is not None and total.get("floor"):
        # not a p99 ratio: the floor packs the same hub work into a shorter window
        print(f"total loop lateness, executor / floor (hub alone): {total['executor'] / total['floor']:.2f}x")
    out = args.out / "spawn_load.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
