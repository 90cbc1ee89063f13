"""One shared view of this hub's instances: a listing of the project, refreshed at most once per period, from
which every server's ``poll()`` is answered by a lookup (KubeSpawner's reflector, for a cloud API).

Polling each server with its own ``GET /servers/{id}`` costs the cloud one request per server and poll
interval; the fleet view costs one listing (``GET /servers/detail``, paginated) per refresh period, whatever
the number of servers. The listing is made on demand by the first poll that finds the view older than the
period; concurrent polls share that one request. A listing that fails is not tried again before a period has
passed since it started: an outage costs the cloud one listing (and its retries) per period, not one per poll.

What the view says is judged conservatively, so that a stale or failed listing never stops a running server:
an instance in the view is reported as listed; an instance missing from a listing that started after the
spawner learned of it is *absent* (the caller confirms with one direct request before calling it gone);
anything else (no listing yet, a failed refresh, a listing older than the instance) is *unknown*.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from . import naming
from .cloud import CloudClient, CloudError, Instance

#: what lookup() answers when the view cannot tell
UNKNOWN = "unknown"
#: how many refresh periods a view may be old and still answer (a failed refresh keeps the previous one)
STALE_PERIODS = 3


@dataclass
class Fleet:
    client: CloudClient
    hub_id: str
    refresh_seconds: float
    log: logging.Logger | logging.LoggerAdapter = field(default_factory=lambda: logging.getLogger(__name__))
    instances: dict[str, Instance] = field(default_factory=dict)
    listed_at: float | None = None  # time.monotonic() when the current view's listing started
    listings: int = 0
    attempted_at: float | None = None  # time.monotonic() when the last listing (failed or not) started
    _refreshing: asyncio.Future | None = None

    def _fresh(self) -> bool:
        return self.listed_at is not None and time.monotonic() - self.listed_at < self.refresh_seconds

    def _usable(self) -> bool:
        return self.listed_at is not None and time.monotonic() - self.listed_at < STALE_PERIODS * self.refresh_seconds

    async def _list(self) -> None:
        started = time.monotonic()
        nodes = await self.client.list_nodes()
        hub_tag = naming.metadata_value(self.hub_id)
        self.instances = {
            i.id: i
            for i in nodes
            if (i.metadata or {}).get(naming.TAG_MANAGED_BY) == naming.MANAGED_BY
            and (i.metadata or {}).get(naming.TAG_HUB_ID) == hub_tag
        }
        self.listed_at = started
        self.listings += 1

    async def refresh(self) -> None:
        """Make sure the view is no older than the period: one listing at a time, shared by every caller.
        A failed or slow listing keeps the previous view (logged) until a period after it started."""
        if self._fresh():
            return
        if self._refreshing is None or self._refreshing.done():
            now = time.monotonic()
            if self.attempted_at is not None and now - self.attempted_at < self.refresh_seconds:
                return  # the last listing failed less than a period ago: the view answers as it is
            self.attempted_at = now
            self._refreshing = asyncio.ensure_future(self._list())
        try:
            await asyncio.wait_for(asyncio.shield(self._refreshing), self.client.timeout_seconds * 2)
        except (CloudError, asyncio.TimeoutError) as e:
            self.log.warning("Listing this hub's instances failed (%s); polls answer from the previous listing", e)

    async def lookup(self, instance_id: str, known_since: float) -> Instance | str | None:
        """The instance as last listed; None if a listing that started after ``known_since`` (monotonic) lacks
        it; :data:`UNKNOWN` when the view cannot tell."""
        await self.refresh()
        if not self._usable():
            return UNKNOWN
        if instance_id in self.instances:
            return self.instances[instance_id]
        assert self.listed_at is not None
        return None if self.listed_at > known_since else UNKNOWN


_fleets: dict[tuple[int, str], Fleet] = {}


def fleet_for(client: CloudClient, hub_id: str, refresh_seconds: float, log: logging.Logger | None = None) -> Fleet:
    """The process's one view of ``hub_id``'s instances through ``client``."""
    key = (id(client), hub_id)
    fleet = _fleets.get(key)
    if fleet is None or fleet.client is not client:
        fleet = _fleets[key] = Fleet(client, hub_id, refresh_seconds, log or logging.getLogger(__name__))
    fleet.refresh_seconds = refresh_seconds
    return fleet
