"""The hub's own floor, for comparison only: a spawner that makes no cloud call at all.

Its ``start()`` waits as long as LibcloudSpawner's three API round trips would (three times the double's
latency) and returns the URL of a stand-in that answers every request. What the event loop still suffers
with it is JupyterHub's own work per spawn (database, OAuth client, proxy route, readiness check), which no
spawner can remove: the benchmark subtracts nothing, it shows the floor next to the real spawner.
"""

from __future__ import annotations

import asyncio

from jupyterhub.spawner import Spawner
from traitlets import Float, Unicode


class FloorSpawner(Spawner):
    latency_seconds = Float(1.0, config=True, help="Seconds per simulated cloud API round trip.")
    standin_url = Unicode("", config=True, help="URL of a server that answers every request (the 'VM').")

    _running = False

    async def start(self) -> str:
        await asyncio.sleep(3 * self.latency_seconds)  # create + the GETs the real spawner waits for
        self._running = True
        return self.standin_url

    async def poll(self) -> int | None:
        return None if self._running else 0

    async def stop(self, now: bool = False) -> None:
        self._running = False
