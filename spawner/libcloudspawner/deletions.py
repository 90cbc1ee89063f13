"""Deletions that must not be lost: instances a stop could not delete, retried until they are gone.

JupyterHub forgets a server whatever ``stop()`` does, and revokes its API token only when ``stop()`` returns.
So a stop that cannot delete its instance records it here and returns: the record is a JSON file beside the
hub's database (:mod:`hubstate`), re-read after a restart, and one task per hub process deletes every
recorded instance again, with exponential backoff, until the cloud says it is gone (404). A server that booted
on a port the spawner created (``internal_ssl``) is recorded with its hub's id, and that port goes once its
instance is gone; so is an instance whose deletion was sent but not seen to finish.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from . import hubstate, ports
from .cloud import CloudClient, CloudError

FILE_NAME = "libcloudspawner-deletions.json"
#: delay before the first retry of a recorded deletion; doubles after each failure up to the maximum
RETRY_FIRST_SECONDS = 2.0
RETRY_MAX_SECONDS = 120.0


class DurableDeletions:
    """The recorded deletions of one hub (one file) and the task retrying them (one per process)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.task: asyncio.Future | None = None
        self._resumed = False

    # ------------------------------------------------------------------------------ the record
    def entries(self) -> list[dict[str, Any]]:
        """The recorded instances (``instance_id``, ``name``, ``server``, ``since``); none if no file."""
        return hubstate.read_records(self.path, "the list of pending deletions")

    def pending_ids(self) -> set[str]:
        return {str(e["instance_id"]) for e in self.entries()}

    def _write(self, entries: list[dict[str, Any]]) -> None:
        hubstate.write_records(self.path, entries)

    def add(self, instance_id: str, name: str, server: str, ports_of_hub: str = "") -> None:
        entries = [e for e in self.entries() if e["instance_id"] != instance_id]
        entry = {"instance_id": instance_id, "name": name, "server": server, "since": time.time()}
        if ports_of_hub:  # the hub whose ports named `name` go with the instance
            entry["ports_of_hub"] = ports_of_hub
        entries.append(entry)
        self._write(entries)

    def remove(self, instance_id: str) -> None:
        self._write([e for e in self.entries() if e["instance_id"] != instance_id])

    # ------------------------------------------------------------------------------ the retries
    def record(self, instance_id: str, name: str, server: str, client: CloudClient, log: Any, *,
               ports_of_hub: str = "", why: str = "could not be deleted") -> None:  # fmt: skip
        """Remember that ``instance_id`` must be deleted (and its ports, with ``ports_of_hub``), and make sure
        the retries run."""
        self.add(instance_id, name, server, ports_of_hub)
        log.warning(
            "Instance %s (%s) of %s %s; recorded in %s, deleted again in the background",
            name, instance_id, server, why, self.path,
        )  # fmt: skip
        self.ensure_running(client, log)

    def resume(self, client: CloudClient, log: Any) -> None:
        """Once per process: retry what an earlier hub process recorded."""
        if self._resumed:
            return
        self._resumed = True
        try:
            if self.entries():
                self.ensure_running(client, log)
        except OSError as e:
            log.error("%s", e)

    def ensure_running(self, client: CloudClient, log: Any) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self.retry_until_gone(client, log))

    async def retry_until_gone(self, client: CloudClient, log: Any) -> None:
        """Delete every recorded instance until the cloud no longer has it; backoff per instance."""
        delay: dict[str, float] = {}
        due: dict[str, float] = {}
        while True:
            entries = self.entries()
            if not entries:
                return
            now = time.monotonic()
            for entry in entries:
                instance_id = str(entry["instance_id"])
                if due.get(instance_id, 0.0) > now:
                    continue
                if await _delete_and_check(client, instance_id, log):
                    log.info("Instance %s (%s) of %s is gone", entry.get("name"), instance_id, entry.get("server"))
                    if entry.get("ports_of_hub"):
                        await ports.delete_unbound(client, log, hub_id=str(entry["ports_of_hub"]),
                                                   name=str(entry["name"]), owner=str(entry.get("server")),
                                                   gone={instance_id})  # fmt: skip
                    self.remove(instance_id)
                    continue
                delay[instance_id] = min(delay.get(instance_id, RETRY_FIRST_SECONDS / 2) * 2, RETRY_MAX_SECONDS)
                due[instance_id] = time.monotonic() + delay[instance_id]
            pending = [due[i] for i in due if i in {str(e["instance_id"]) for e in self.entries()}]
            await asyncio.sleep(max(0.1, min(pending, default=now) - time.monotonic()))


async def _delete_and_check(client: CloudClient, instance_id: str, log: Any) -> bool:
    """DELETE the instance (a 404 is fine), then True if the cloud no longer has it."""
    try:
        await client.destroy_node(instance_id)
        instance = await client.get_node(instance_id, retries=1)
    except CloudError as e:
        log.warning("Deleting instance %s again failed (%s); will retry", instance_id, e)
        return False
    return instance is None or instance.state == "terminated"


_BY_PATH: dict[Path, DurableDeletions] = {}


def for_directory(directory: Path) -> DurableDeletions:
    """The process's one :class:`DurableDeletions` for the hub whose files are in ``directory``."""
    path = (directory / FILE_NAME).resolve()
    if path not in _BY_PATH:
        _BY_PATH[path] = DurableDeletions(path)
    return _BY_PATH[path]
