"""Cloud API requests per minute and event-loop lag of polling N running servers, side by side in one run:
each server polled with its own `GET /servers/{id}` (how `poll()` worked before the fleet view) against
`LibcloudSpawner.poll()` answered from the fleet view (one shared listing per `fleet_refresh_seconds`).

The servers live in the API double (`--no-run`: no Jupyter process behind them); the spawners are real
LibcloudSpawner objects with the real libcloud driver over HTTP, polled the way JupyterHub polls them: each
every `--poll-interval` seconds, their phases spread over the interval. The loop-lag probe sleeps 10 ms again
and again in the same event loop and records how late it wakes up.

    python -m benchmarks.poll_load --servers 100,1000 --window 60 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from testkit import fleetscale

REPO = Path(__file__).resolve().parents[1]
HUB_ID = "pollbench"


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))] if values else float("nan")


async def measure(double, mode: str, servers: list[dict], config: dict, poll_interval: float, window: float) -> dict:
    spawners = fleetscale.loaded_spawners(servers, config, HUB_ID)
    client = spawners[0]._client()

    async def direct(sp) -> None:  # how poll() worked before the fleet view
        await client.get_node(sp.instance_id, retries=1)

    lags: list[float] = []

    async def probe() -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append((time.perf_counter() - t0 - 0.01) * 1000)

    before, routes_before = client.calls.copy(), fleetscale.route_counts(double)
    prober = asyncio.ensure_future(probe())
    await fleetscale.poll_periodically(spawners, poll_interval, window, direct if mode == "per-server" else None)
    prober.cancel()
    await asyncio.gather(prober, return_exceptions=True)
    calls = {k: v - before.get(k, 0) for k, v in client.calls.items() if v - before.get(k, 0)}
    # what the cloud received (a paginated listing may be several)
    routes = fleetscale.routes_since(double, routes_before)
    requests = sum(routes.values())
    return {
        "mode": mode,
        "servers": len(servers),
        "window_s": window,
        "poll_interval_s": poll_interval,
        "client_calls": calls,
        "cloud_requests": routes,
        "requests_per_minute": round(requests * 60 / window, 1),
        "lag_ms": {q: round(percentile(lags, n), 2) for q, n in (("p50", 50), ("p99", 99), ("max", 100))},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", default="100,1000", help="comma-separated server counts")
    p.add_argument("--window", type=float, default=60.0, help="seconds each mode is measured")
    p.add_argument("--poll-interval", type=float, default=60.0, help="seconds between two polls of a server")
    p.add_argument("--fleet-refresh", type=float, default=15.0, help="fleet_refresh_seconds")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    counts = sorted(int(n) for n in args.servers.split(","))
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="lcs-pollbench-") as tmp,
        fleetscale.scale_double(Path(tmp)) as double,
    ):
        config = fleetscale.spawner_config(double, fleet_refresh_seconds=args.fleet_refresh, api_max_workers=8)
        servers: list[dict] = []
        for n in counts:
            print(f"--- {n} servers: creating {n - len(servers)} more in the double", flush=True)
            servers += fleetscale.create_servers(double, n - len(servers), HUB_ID)
            for mode in ("per-server", "fleet"):
                res = asyncio.run(measure(double, mode, servers[:n], config, args.poll_interval, args.window))
                print(json.dumps(res), flush=True)
                results.append(res)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"poll_load-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    for n in counts:
        per, fleet = (next(r for r in results if r["servers"] == n and r["mode"] == m) for m in ("per-server", "fleet"))
        print(f"{n} servers: {per['requests_per_minute']} -> {fleet['requests_per_minute']} requests/min; "
              f"loop lag p99 {per['lag_ms']['p99']} -> {fleet['lag_ms']['p99']} ms")  # fmt: skip
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
