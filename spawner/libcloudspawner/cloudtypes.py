"""What the cloud client hands back: its errors and the records of instances and volumes (plain data, built
from libcloud's nodes and volumes by :func:`to_instance` and :func:`to_volume`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class CloudError(Exception):
    """A cloud call failed. ``transient``: retrying later may work. ``status``: HTTP status if any."""

    def __init__(self, message: str, *, transient: bool = False, status: int | None = None):
        super().__init__(message)
        self.transient = transient
        self.status = status


class CloudConfigError(CloudError):
    """The hub's configuration does not fit the cloud (unknown provider, region, image, key pair, ...): the
    administrator's to fix, never the user's, and retrying does not help."""


class CloudNotFound(CloudConfigError):
    """An image, size or network named in the configuration does not exist in the cloud."""


class CloudAmbiguous(CloudNotFound):
    """A name in the configuration names several images, sizes or networks (Glance allows duplicate
    names): the spawner will not guess which one a user boots. Configure it by id."""


class CreateOutcomeUnknown(CloudError):
    """The create request may or may not have created the instance: look it up before doing anything."""


@dataclass(frozen=True)
class Instance:
    """What the spawner needs to know of a cloud instance (decoupled from libcloud's Node)."""

    id: str
    name: str
    state: str  # libcloud NodeState value: "running", "pending", "error", "terminated", "stopped", ...
    private_ips: tuple[str, ...] = ()
    public_ips: tuple[str, ...] = ()
    metadata: Mapping[str, Any] | None = None
    task_state: str | None = None
    created: str | None = None  # ISO 8601, as the cloud reports it
    vm_state: str | None = None  # Nova's: active, stopped, shelved_offloaded, error, building...

    @property
    def deleting(self) -> bool:
        return self.task_state == "deleting" or self.state in ("terminated",)


@dataclass(frozen=True)
class Volume:
    """What the spawner needs to know of a block-storage volume (decoupled from libcloud's StorageVolume)."""

    id: str
    name: str | None
    size_gib: int
    status: str  # Cinder's: creating, available, attaching, in-use, detaching, deleting, error, error_deleting...
    metadata: Mapping[str, str] | None = None
    volume_type: str | None = None
    attached_to: tuple[str, ...] = ()  # server ids
    device: str | None = None  # of the first attachment, as Nova reports it (the guest may name it otherwise)
    created: str | None = None

    @property
    def failed(self) -> bool:
        return self.status.startswith("error")


def to_volume(vol) -> Volume:
    extra = getattr(vol, "extra", None) or {}
    attachments = [a for a in extra.get("attachments") or () if a]
    servers = tuple(str(a.get("server_id") or a.get("serverId")) for a in attachments)
    return Volume(
        id=str(vol.id),
        name=vol.name,
        size_gib=int(vol.size or 0),
        status=str(extra.get("state") or getattr(vol.state, "value", vol.state) or "unknown").lower(),
        metadata=extra.get("metadata") or {},
        volume_type=extra.get("volume_type"),
        attached_to=servers,
        device=attachments[0].get("device") if attachments else None,
        created=extra.get("created_at"),
    )


def to_instance(node) -> Instance:
    extra = getattr(node, "extra", None) or {}
    state = node.state
    return Instance(
        id=str(node.id),
        name=node.name,
        state=str(getattr(state, "value", state)).lower(),
        private_ips=tuple(node.private_ips or ()),
        public_ips=tuple(node.public_ips or ()),
        metadata=extra.get("metadata") or {},
        task_state=extra.get("task_state"),
        created=extra.get("created"),
        vm_state=extra.get("vm_state"),
    )
