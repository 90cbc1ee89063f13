"""Randomized fault campaign: a real JupyterHub + LibcloudSpawner against the OpenStack API double.

Each run spawns one user's server while one injected cloud fault fires (5xx, timeouts, connection resets, a
create whose response is lost, an instance going to ERROR, failing or 404 deletes, expired tokens, quota,
rate limits, the API going down), then stops it. After every run the campaign checks:

- **no leak**: every live instance in the cloud is one the hub knows (its server state names it);
- **clear message**: a failed spawn told the user something short, with no traceback and no secret;
- **responsive hub**: the hub answered its API all through the run;
- **no wrongly stopped server**: a long-running "canary" server, polled every second, is still running.

    python -m benchmarks.fault_campaign --runs 200 --seed 1 --out benchmarks/results

The hub tier runs a shorter campaign (`tests/hub/test_fault_campaign.py`) on every CI run.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from testkit.hub import PASSWORD, Hub, original_config
from testkit.localhost import free_port
from testkit.osdouble.fixture import running_double
from testkit.wait import wait_until

REPO = Path(__file__).resolve().parents[1]

SERVER = r"^/v2\.1/servers/[^/]+$"
SERVERS = r"^/v2\.1/servers$"
DETAIL = r"^/v2\.1/servers/detail$"
COMPUTE_ROUTES = [("POST", SERVERS), ("GET", SERVER), ("GET", DETAIL), ("DELETE", SERVER)]

# Settings that keep a run short: transient faults are retried quickly, starts time out in 40 s.
CAMPAIGN_CONFIG = """
c.LibcloudSpawner.api_timeout_seconds = 3
c.LibcloudSpawner.api_retries = 4
c.LibcloudSpawner.api_backoff_base_seconds = 0.2
c.LibcloudSpawner.api_backoff_max_seconds = 2
c.LibcloudSpawner.startup_poll_interval_seconds = 0.5
c.LibcloudSpawner.start_timeout = 40
c.LibcloudSpawner.stop_timeout_seconds = 30
c.LibcloudSpawner.poll_interval = 1
c.JupyterHub.log_level = 'INFO'
"""


def _choose(rng: random.Random, scenario: str) -> tuple[list[tuple[Any, dict[str, Any]]], list[str]]:
    """The fault rules for a scenario: ([(effect, match)], [actions taken during the spawn])."""
    method, path = rng.choice(COMPUTE_ROUTES)
    where = {"method": method, "path": path, "after": rng.randint(0, 2)}
    if scenario == "5xx":
        status = rng.choice([500, 502, 503])
        return [({"type": "status", "status": status}, {**where, "times": rng.randint(1, 3)})], []
    if scenario == "timeout":
        return [({"type": "delay", "seconds": 8}, {**where, "times": 1})], []
    if scenario == "connection_reset":
        return [({"type": rng.choice(["reset", "drop"])}, {**where, "times": rng.randint(1, 2)})], []
    if scenario == "lost_create":
        return [("lost_response", {"method": "POST", "path": SERVERS, "nth": 1})], []
    if scenario == "instance_error":
        fault = rng.choice(["novalidhost", "disk"])
        return [({"type": "build_error", "fault": fault}, {"method": "POST", "path": SERVERS, "nth": 1})], []
    if scenario == "delete_fails":
        return [
            ({"type": "status", "status": 500}, {"method": "DELETE", "path": SERVER, "times": rng.randint(1, 3)})
        ], []
    if scenario == "delete_404":
        return [({"type": "status", "status": 404}, {"method": "DELETE", "path": SERVER, "nth": 1})], []
    if scenario == "token_expired":
        return [], ["expire_tokens"]
    if scenario == "unauthorized":
        return [({"type": "unauthorized"}, {**where, "times": 1})], []
    if scenario == "quota":
        return [({"type": "quota", "resource": rng.choice(["instances", "ram", "cores"])},
                 {"method": "POST", "path": SERVERS, "nth": 1})], []  # fmt: skip
    if scenario == "rate_limit":
        effect = {"type": "rate_limit", "status": rng.choice([413, 429]), "retry_after": 1}
        return [(effect, {**where, "times": 1})], []
    if scenario == "api_down":
        return [({"type": "api_down", "seconds": rng.choice([2, 4, 6])}, {**where, "nth": 1})], []
    if scenario == "instance_dies_running":
        return [], ["kill_process"]
    raise ValueError(scenario)


SCENARIOS = [
    "5xx", "timeout", "connection_reset", "lost_create", "instance_error", "delete_fails", "delete_404",
    "token_expired", "unauthorized", "quota", "rate_limit", "api_down", "instance_dies_running",
]  # fmt: skip


@dataclass
class RunResult:
    run: int
    scenario: str
    faults: list[Any]
    outcome: str = ""  # "ready" | "failed"
    message: str = ""
    message_clear: bool = True
    faults_fired: int = 0
    leaked: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)  # log lines about a leaked instance, to reproduce
    canary_ok: bool = True
    hub_max_api_s: float = 0.0
    hub_unanswered: int = 0
    seconds: float = 0.0


class HubProbe:
    """Calls the hub API every 0.2 s in a thread; records the slowest answer and the unanswered calls."""

    def __init__(self, hub: Hub):
        self.hub = hub
        self.max_s = 0.0
        self.unanswered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                ok = self.hub.api("GET", "/").status_code == 200
            except Exception:
                ok = False
            self.max_s = max(self.max_s, time.monotonic() - t0)
            self.unanswered += 0 if ok else 1
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=40)


def hub_instance_ids(hub: Hub) -> set[str]:
    r = hub.api("GET", "/users?limit=1000")
    assert r.status_code == 200, r.text
    ids = set()
    for user in r.json():
        for model in (user.get("servers") or {}).values():
            iid = (model.get("state") or {}).get("instance_id")
            if iid:
                ids.add(iid)
    return ids


def live_instances(double) -> list[dict[str, Any]]:
    """Instances that still exist (not deleted, not being deleted)."""
    return [
        s
        for s in double.client.servers()
        if s.get("status") != "DELETED" and s.get("OS-EXT-STS:task_state") != "deleting"
    ]


def delete_in_cloud(double, server_id: str) -> None:
    """DELETE a server through the OpenStack API itself (Keystone token, then Nova), as an operator would."""
    import requests

    ident = double.client.catalogue()["identity"]
    auth = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": ident["user"]["name"], "domain": {"id": ident["domain"]["id"]},
                                      "password": ident["user"]["password"]}},
            },
            "scope": {"project": {"name": ident["project"]["name"], "domain": {"id": ident["domain"]["id"]}}},
        }
    }  # fmt: skip
    r = requests.post(f"{double.url}/v3/auth/tokens", json=auth, timeout=10)
    r.raise_for_status()
    token = r.headers["X-Subject-Token"]
    requests.delete(f"{double.url}/v2.1/servers/{server_id}", headers={"X-Auth-Token": token}, timeout=10)


def clear_message(message: str) -> bool:
    return bool(message) and len(message) < 400 and "Traceback" not in message and PASSWORD not in message


def spawn_and_watch(hub: Hub, user: str, timeout_s: float) -> tuple[str, str]:
    r = hub.api("POST", f"/users/{user}/server")
    if r.status_code not in (201, 202):
        try:
            message = r.json().get("message", "")
        except ValueError:
            message = r.text
        return "failed", message
    events = hub.progress(user, timeout_s=timeout_s)
    last = events[-1] if events else {}
    if last.get("ready"):
        return "ready", ""
    return "failed", last.get("message", "")


def one_run(hub: Hub, double, rng: random.Random, run: int, scenario: str, canary_id: str) -> RunResult:
    rules, actions = _choose(rng, scenario)
    result = RunResult(run=run, scenario=scenario, faults=[r[0] for r in rules] + actions)
    user = f"run{run:04d}"
    t0 = time.monotonic()
    ids = [double.client.add_fault(effect, **match)["id"] for effect, match in rules]
    with HubProbe(hub) as probe:
        timer = None
        if "expire_tokens" in actions:
            timer = threading.Timer(rng.uniform(0.2, 1.5), double.client.expire_tokens)
            timer.start()
        result.outcome, result.message = spawn_and_watch(hub, user, timeout_s=120)
        if timer:
            timer.join()
        if "kill_process" in actions and result.outcome == "ready":
            # the VM stays ACTIVE but its service died: the hub must not lose track of the instance
            server = [s for s in live_instances(double) if s["metadata"].get("jupyterhub-user") == user]
            if server:
                double.client.kill_instance_process(server[0]["id"])
        if result.outcome == "ready":
            r = hub.api("DELETE", f"/users/{user}/server")
            assert r.status_code in (202, 204), r.text
            hub.wait_gone(user, timeout_s=90)
        result.hub_max_api_s = round(probe.max_s, 3)
        result.hub_unanswered = probe.unanswered
    result.faults_fired = sum(double.client.fault(i).get("hits", 0) for i in ids)
    double.client.clear_faults()
    if result.outcome == "failed":
        result.message_clear = clear_message(result.message)

    # no leak: within a bounded settle time, every live instance is one the hub knows
    def settled():
        known = hub_instance_ids(hub)
        return not [s for s in live_instances(double) if s["id"] not in known]

    try:
        wait_until(settled, timeout_s=60, interval_s=0.5, what="no instance unknown to the hub")
    except TimeoutError:
        known = hub_instance_ids(hub)
        result.leaked = [s["id"] for s in live_instances(double) if s["id"] not in known]
        result.evidence = [
            line[:300]
            for line in (hub.log_text() + double.log_text()).splitlines()
            if user in line or any(iid in line for iid in result.leaked)
        ][-60:]
        # counted once, here; then removed (as the reaper would) so that later runs are judged on their own
        for iid in result.leaked:
            delete_in_cloud(double, iid)
    canary = (hub.spawner_model("canary") or {}).get("ready")
    result.canary_ok = bool(canary) and any(s["id"] == canary_id for s in live_instances(double))
    result.seconds = round(time.monotonic() - t0, 1)
    return result


def summarize(results: list[RunResult]) -> dict[str, Any]:
    by = Counter(r.scenario for r in results)
    outcomes = Counter(f"{r.scenario}:{r.outcome}" for r in results)
    return {
        "runs": len(results),
        "faults_injected": sum(len(r.faults) for r in results),
        "faults_fired": sum(r.faults_fired for r in results),
        "vms_leaked": sum(len(r.leaked) for r in results),
        "servers_wrongly_stopped": sum(1 for r in results if not r.canary_ok),
        "unclear_messages": sum(1 for r in results if not r.message_clear),
        "hub_unanswered_api_calls": sum(r.hub_unanswered for r in results),
        "hub_slowest_api_s": max((r.hub_max_api_s for r in results), default=0),
        "ready": sum(1 for r in results if r.outcome == "ready"),
        "failed_with_message": sum(1 for r in results if r.outcome == "failed"),
        "runs_by_scenario": dict(sorted(by.items())),
        "outcomes": dict(sorted(outcomes.items())),
        "messages": sorted({r.message for r in results if r.message}),
    }


def run_campaign(
    runs: int, seed: int, workdir: Path, *, round_robin: bool = False, scenarios: list[str] | None = None
) -> tuple[dict, list[RunResult]]:
    scenarios = scenarios or SCENARIOS
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    results: list[RunResult] = []
    with running_double(workdir, no_run=True, standin_port=port, scheduling_s=0.2, spawning_s=0.3,
                        delete_linger_s=0.3) as double:  # fmt: skip
        identity = double.client.catalogue()["identity"]
        identity["user"]["password"] = PASSWORD
        double.client.set_catalogue(identity=identity)
        hub = Hub(workdir, double, original_config(double.url), extra_config=CAMPAIGN_CONFIG)
        hub.singleuser_port = port
        hub.write_config()
        hub.start()
        try:
            r = hub.api("POST", "/users", json={"usernames": ["canary"] + [f"run{i:04d}" for i in range(runs)]})
            assert r.status_code in (201, 409), r.text
            outcome, message = spawn_and_watch(hub, "canary", timeout_s=60)
            assert outcome == "ready", f"the canary did not start: {message}\n{hub.log_tail()}"
            canary_id = next(iter(hub_instance_ids(hub)))
            for i in range(runs):
                scenario = scenarios[i % len(scenarios)] if round_robin else rng.choice(scenarios)
                res = one_run(hub, double, rng, i, scenario, canary_id)
                results.append(res)
                print(json.dumps(asdict(res)), flush=True)
        finally:
            hub.stop()
    return summarize(results), results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--scenarios", default="", help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    args = p.parse_args(argv)
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        p.error(f"unknown scenarios {unknown}; choose from {SCENARIOS}")
    # SIGTERM ends the run through the finally blocks: the hub, its proxy and the double are stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lcs-faults-") as tmp:
        summary, results = run_campaign(args.runs, args.seed, Path(tmp), scenarios=scenarios)
    summary["seed"] = args.seed
    summary["wall_s"] = round(time.monotonic() - t0)
    (args.out / "fault_campaign.json").write_text(json.dumps({"summary": summary, "runs": [asdict(r) for r in results]},
                                                             indent=1) + "\n")  # fmt: skip
    print(json.dumps(summary, indent=1))
    bad = summary["vms_leaked"] + summary["servers_wrongly_stopped"] + summary["unclear_messages"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
