"""Many running servers of one hub in the API double, and the LibcloudSpawner objects that poll them: what the
hub tier's fleet test and ``benchmarks/poll_load.py`` share.

The double runs with ``--no-run`` (no Jupyter process behind an instance), a /16 of loopback addresses and
quotas and a host big enough for thousands of instances; servers are created through the Nova API with the
real libcloud driver, tagged as the hub's own; spawners are real ``LibcloudSpawner`` objects whose state names
their instance, as a restarted hub loads them from its database.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from libcloudspawner import naming
from libcloudspawner.spawner import LibcloudSpawner

from .hub import PASSWORD, original_config
from .osdouble.fixture import DoubleHandle, by_name, libcloud_driver, running_double

#: the route of a server listing, and of one server's GET, as the double counts its requests
LISTING_ROUTE = "GET /v2.1/servers/detail"
SERVER_ROUTE = "GET /v2.1/servers/{id}"


@contextlib.contextmanager
def scale_double(state_dir: Path, **options: Any) -> Iterator[DoubleHandle]:
    """The API double sized for thousands of instances that run nothing (``options``: more CLI flags)."""
    with running_double(state_dir, no_run=True, scheduling_s=0.0, spawning_s=0.0, **options) as double:
        identity = double.client.catalogue()["identity"]
        identity["user"]["password"] = PASSWORD
        quotas = {"instances": 5000, "cores": 50000, "ram": 100_000_000}
        double.client.set_catalogue(
            identity=identity, quotas=quotas, host={"ram": 10**8, "vcpus": 10**6, "disk": 10**7}
        )
        double.client.set_config(subnet="127.0.0.0/16")  # a /24 holds 253 instances: room for thousands
        yield double


def spawner_config(double: DoubleHandle, **traits: Any) -> dict[str, Any]:
    """LibcloudSpawner traits reaching ``double`` (the original documentation's settings), plus ``traits``."""
    return {**original_config(double.url), **traits}


def create_servers(double: DoubleHandle, n: int, hub_id: str, *, workers: int = 16) -> list[dict[str, str]]:
    """``n`` ACTIVE servers tagged as ``hub_id``'s, created through the Nova API (``workers`` at a time); each
    as ``{"user", "id", "name"}``."""
    driver = libcloud_driver(double, "2.0", key=PASSWORD)
    size, image = by_name(driver.list_sizes(), "m1.small"), by_name(driver.list_images(), "debian-12-jupyter")
    have = len(double.client.servers())

    def create(i: int) -> dict[str, str]:
        user = f"u{have + i}"
        tags = naming.instance_tags(hub_id=hub_id, username=user, servername="")
        node = driver.create_node(name=f"jupyter-{user}", size=size, image=image, ex_metadata=tags)
        return {"user": user, "id": node.id, "name": node.name}

    with ThreadPoolExecutor(workers) as pool:
        made = list(pool.map(create, range(n)))
    deadline = time.monotonic() + 600
    while sum(s["status"] == "ACTIVE" for s in double.client.servers()) < have + n:
        if time.monotonic() > deadline:
            raise TimeoutError("the double's servers did not all become ACTIVE within 600 s")
        time.sleep(0.5)
    return made


def loaded_spawners(servers: list[dict[str, str]], config: dict[str, Any], hub_id: str) -> list[LibcloudSpawner]:
    """One LibcloudSpawner per server, its state loaded as a restarted hub loads it from the database."""
    spawners = []
    for s in servers:
        spawner = LibcloudSpawner(user=SimpleNamespace(name=s["user"]), hub_id=hub_id, **config)
        spawner.load_state({"instance_id": s["id"], "instance_name": s["name"], "address": "127.0.0.1"})
        spawners.append(spawner)
    return spawners


async def poll_periodically(
    spawners: list[LibcloudSpawner],
    interval: float,
    window: float,
    poll: Callable[[LibcloudSpawner], Awaitable[Any]] | None = None,
    seed: int | None = None,
) -> list[tuple[LibcloudSpawner, Any]]:
    """Poll every spawner each ``interval`` seconds for ``window`` seconds, as JupyterHub's per-server poll
    callbacks do (their phases spread over the interval); every (spawner, answer) in order. ``poll`` replaces
    ``spawner.poll()`` (e.g. a direct request per server, for comparison)."""
    rng = random.Random(seed)
    answers: list[tuple[LibcloudSpawner, Any]] = []
    poll = poll or (lambda sp: sp.poll())

    async def one(sp: LibcloudSpawner, phase: float) -> None:
        await asyncio.sleep(phase)
        while True:
            answers.append((sp, await poll(sp)))
            await asyncio.sleep(interval)

    tasks = [asyncio.ensure_future(one(sp, rng.uniform(0, interval))) for sp in spawners]
    await asyncio.sleep(window)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return answers


def route_counts(double: DoubleHandle) -> dict[str, int]:
    """The double's request count per route so far (``"GET /v2.1/servers/detail"``: ...)."""
    return dict(double.client.call_counts()["by_route"])


def routes_since(double: DoubleHandle, before: dict[str, int]) -> dict[str, int]:
    """The requests per route the double received since ``before`` (a :func:`route_counts` result)."""
    now = route_counts(double)
    return {k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0)}
