"""A fleet of 1,000 running servers of one hub answering polls from the shared listing: 1,000 real
LibcloudSpawner objects, their state loaded as a restarted hub loads it, polled the way JupyterHub polls them
(every server at once at hub start, then each on its own period), against the API double holding 1,000
instances (``--no-run``). Every poll answers None (running); the cloud gets a few listings and no per-server
request; a listing that fails, before any listing succeeded or after, makes no server look stopped.
Durations are the benchmark's business (``benchmarks/poll_load.py``), not this test's."""

from __future__ import annotations

import asyncio

import pytest

from testkit.fleetscale import (
    LISTING_ROUTE,
    SERVER_ROUTE,
    create_servers,
    loaded_spawners,
    poll_periodically,
    route_counts,
    routes_since,
    scale_double,
    spawner_config,
)

pytestmark = pytest.mark.hub

HUB_ID = "fleetscale"
SERVERS = 1000
REFRESH = 1.0  # fleet_refresh_seconds
INTERVAL = 1.5  # seconds between two polls of one server (JupyterHub's poll_interval, shortened)
LISTING = "^/v2.1/servers/detail$"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with scale_double(tmp_path_factory.mktemp("fleetscale")) as double:
        servers = create_servers(double, SERVERS, HUB_ID)
        yield double, servers


def phase(double, before: dict[str, int]) -> dict[str, int]:
    """The cloud requests made since ``before``, but Keystone's (a token read per new worker thread)."""
    return {route: n for route, n in routes_since(double, before).items() if "/v3/" not in route}


def test_a_thousand_servers_answer_polls_from_a_few_listings_and_a_failed_listing_stops_none(fleet):
    double, servers = fleet
    config = spawner_config(double, fleet_refresh_seconds=REFRESH, api_retries=1, api_backoff_base_seconds=0.05,
                            api_backoff_max_seconds=0.1)  # fmt: skip
    refused = {"type": "status", "status": 503}

    async def scenario() -> dict[str, tuple[list, dict[str, int]]]:
        spawners = loaded_spawners(servers, config, HUB_ID)
        seen: dict[str, tuple[list, dict[str, int]]] = {}

        async def at_once(name: str) -> None:  # JupyterHub's start: every server's poll at the same time
            before = route_counts(double)
            answers = await asyncio.gather(*(sp.poll() for sp in spawners))
            seen[name] = (list(answers), phase(double, before))

        async def periodic(name: str, window: float, seed: int) -> None:
            before = route_counts(double)
            answers = await poll_periodically(spawners, INTERVAL, window, seed=seed)
            seen[name] = ([a for _, a in answers], phase(double, before))

        # the hub starts while the listing fails: no listing has ever succeeded
        rule = double.client.add_fault(refused, method="GET", path=LISTING)
        await at_once("start, listing refused")
        double.client.remove_fault(rule["id"])
        await asyncio.sleep(REFRESH)  # a failed listing is tried again a period after it started
        await at_once("start")
        await periodic("steady", 3 * INTERVAL, seed=1)
        # the listing fails for longer than the view may be old (3 periods): fresh, stale, then unusable
        rule = double.client.add_fault(refused, method="GET", path=LISTING)
        await periodic("listing refused", 3 * INTERVAL, seed=2)
        hits = double.client.fault(rule["id"])["hits"]
        double.client.remove_fault(rule["id"])
        await periodic("recovered", 2 * INTERVAL, seed=3)
        assert hits >= 2, "the listing was not asked during the outage"
        return seen

    seen = asyncio.run(scenario())
    for name, (answers, requests) in seen.items():
        assert len(answers) >= SERVERS, f"{name}: only {len(answers)} polls"
        stopped = [a for a in answers if a is not None]
        assert not stopped, f"{name}: {len(stopped)} polls said a running server had stopped: {stopped[:5]}"
        assert SERVER_ROUTE not in requests, f"{name}: per-server requests {requests}"
        assert set(requests) <= {LISTING_ROUTE}, f"{name}: unexpected cloud requests {requests}"
    # 1,000 polls at once share one listing (1,000 instances: one page); with retries when it is refused
    assert seen["start"][1] == {LISTING_ROUTE: 1}
    assert 1 <= seen["start, listing refused"][1][LISTING_ROUTE] <= 2  # one listing and its one retry
    # about one listing per refresh period, whatever the number of servers (each server polled 3 times)
    steady_polls = len(seen["steady"][0])
    assert steady_polls >= 2 * SERVERS
    assert seen["steady"][1][LISTING_ROUTE] <= 3 * INTERVAL / REFRESH + 2
    # during the outage: one failed listing (and its retry) per period at most, never one per poll
    assert seen["listing refused"][1][LISTING_ROUTE] <= 2 * (3 * INTERVAL / REFRESH + 2)
    assert seen["recovered"][1][LISTING_ROUTE] >= 1  # the view is listed again once the cloud answers
