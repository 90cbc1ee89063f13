"""The original LibcloudSpawner's pattern, for comparison only: libcloud called directly in the coroutine.

Everything else (options, naming, user-data, caching, polling) is the real LibcloudSpawner, so the
benchmark isolates one variable: whether cloud calls run on the hub's event loop or off it.
"""

from __future__ import annotations

from typing import Any

from libcloudspawner.cloud import CloudClient
from libcloudspawner.cloudcalls import create
from libcloudspawner.cloudtypes import to_instance
from libcloudspawner.spawner import LibcloudSpawner


class NaiveCloudClient(CloudClient):
    """Runs every libcloud call synchronously on the event loop (blocking it for the call's duration)."""

    async def _once(self, method, label, *args, **kwargs):
        self.calls[label] = self.calls.get(label, 0) + 1
        return self._run(method, args, kwargs)  # blocks the loop: the pattern being measured

    async def create_node(self, *, tracker: Any = None, **kwargs):
        self.calls["create_node"] = self.calls.get("create_node", 0) + 1
        return to_instance(self._run(create, (), kwargs))


_naive_clients: dict[int, NaiveCloudClient] = {}


class NaiveLibcloudSpawner(LibcloudSpawner):
    def _client(self) -> CloudClient:
        real = super()._client()
        naive = _naive_clients.get(id(real))
        if naive is None:
            naive = _naive_clients[id(real)] = NaiveCloudClient(real._factory, real.settings, provider=real.provider)
        return naive
