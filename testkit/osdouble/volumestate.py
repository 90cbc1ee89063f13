"""The double's volumes, independent of HTTP: Cinder's records, the volumes a create boots with, and a volume's
timed status changes (mixed into :class:`~testkit.osdouble.state.Double`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("osdouble")


@dataclass
class VolumeRecord:
    """A Cinder volume. ``attachment`` (``server_id``, ``attachment_id``, ``device``, ``attached_at``) is set
    from Nova's attach request until the detach completes; Cinder shows it while ``in-use`` or ``detaching``."""

    id: str
    name: str | None
    description: str | None
    size: int
    volume_type: str
    metadata: dict[str, str]
    tenant_id: str
    user_id: str
    created: float
    updated: float | None = None
    status: str = "creating"
    attachment: dict[str, Any] | None = None
    gone: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class VolumeState:
    """The volume side of the double's state (``self.volumes``: id -> record; ``self.config``: timings)."""

    volumes: dict[str, VolumeRecord]

    def boot_volumes(self, mappings: Any) -> list[VolumeRecord] | tuple[int, str]:
        """The volumes of a create's ``block_device_mapping_v2`` (``source_type`` and ``destination_type``
        ``volume``), each available; else Nova's refusal. Image entries are Nova's own (``imageRef``)."""
        if mappings is None:
            return []
        if not isinstance(mappings, list) or not all(isinstance(m, dict) for m in mappings):
            return 400, f"Invalid input for field/attribute block_device_mapping_v2. Value: {mappings}."
        found = []
        for m in mappings:
            if m.get("source_type") != "volume":
                continue
            vol = self.volumes.get(str(m.get("uuid")))
            if vol is None or vol.gone:
                return 400, f"Block Device Mapping is Invalid: failed to get volume {m.get('uuid')}."
            if vol.status != "available" or vol.attachment is not None:
                return 400, (
                    f"Invalid volume: Volume {vol.id} status must be available or downloading to "
                    f"reserve, but the current status is {vol.status}."
                )
            found.append(vol)
        return found

    # ------------------------------------------------------------------ volumes

    def live_volumes(self) -> list[VolumeRecord]:
        return [v for v in self.volumes.values() if not v.gone]

    def attached_volumes(self, server_id: str) -> list[VolumeRecord]:
        return [v for v in self.live_volumes() if v.attachment and v.attachment["server_id"] == server_id]

    def volume_transition(
        self,
        vol: VolumeRecord,
        through: str,
        end: str | None,
        seconds: float,
        done: Callable[[VolumeRecord], None] | None = None,
    ) -> None:
        """``vol`` is ``through`` now and ``end`` after ``seconds`` (``end`` None: it disappears), then
        ``done(vol)`` runs. A newer transition (or a forced status) replaces a pending one."""
        if vol.task is not None and not vol.task.done():
            vol.task.cancel()
        vol.status, vol.updated = through, time.time()
        vol.task = asyncio.get_running_loop().create_task(self._finish_transition(vol, end, seconds, done))

    async def _finish_transition(
        self, vol: VolumeRecord, end: str | None, seconds: float, done: Callable[[VolumeRecord], None] | None
    ) -> None:
        await asyncio.sleep(max(0.0, seconds))
        if done is not None:
            done(vol)
        if end is None:
            vol.gone = True
            log.info("volume %s deleted", vol.id)
        else:
            vol.status, vol.updated = end, time.time()
            log.info("volume %s is %s", vol.id, end)

    def set_volume_status(self, vol: VolumeRecord, status: str) -> None:
        """Force a status now (a stuck or failed volume): any pending transition is dropped."""
        if vol.task is not None and not vol.task.done():
            vol.task.cancel()
        vol.status, vol.updated = status, time.time()
        if status == "available":
            vol.attachment = None
        log.info("volume %s forced to %s", vol.id, status)
