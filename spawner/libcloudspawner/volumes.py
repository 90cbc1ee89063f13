"""Home volumes: a block-storage volume per user (or per named server) that outlives the servers' VMs.

:class:`HomeVolumes` does the cloud work for one server: :meth:`~HomeVolumes.ensure` finds the volume by
name and tags or creates it (never two: a create whose outcome is unknown is looked up before another is
sent), :meth:`~HomeVolumes.rename` follows a named server's new name, :meth:`~HomeVolumes.attach` and
:meth:`~HomeVolumes.detach` ask Nova and wait, bounded, for Cinder to say it is done, and
:meth:`~HomeVolumes.delete_forever` removes this hub's volume of that user or server and nothing else. It
knows nothing of JupyterHub: progress goes to the ``report`` callback, failures are
:class:`HomeVolumeError` (a message for the user, the detail for the log). A volume is never deleted here
except by ``delete_forever``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .cloud import CloudClient, CloudError, CreateOutcomeUnknown, Volume
from .naming import DEFAULT_VOLUME_NAME_TEMPLATE, volume_name, volume_server_name, volume_tags

Report = Callable[[str], None]

#: statuses of a volume that exists and works (Cinder's ``reserved`` precedes ``attaching``)
READY = ("available", "in-use", "attaching", "reserved", "detaching")
#: ...and one on its way there
USABLE = (*READY, "creating")
#: statuses that are on the way to another (an attach or a detach in progress)
MOVING = ("attaching", "reserved", "detaching", "creating")


class HomeVolumeError(Exception):
    """A home volume cannot be used now. ``user_message`` is safe to show; ``str()`` is the log's detail.
    ``reason``: ``attached-elsewhere``, ``error``, ``attach-failed``, ``timeout``, ``duplicate``, ``gone``."""

    def __init__(self, user_message: str, log_message: str, *, reason: str, volume_id: str | None = None):
        super().__init__(log_message)
        self.user_message = user_message
        self.reason = reason
        self.volume_id = volume_id


@dataclass(frozen=True)
class HomeVolumeSettings:
    """What the administrator configures (the spawner builds it from its traits)."""

    name_template: str = DEFAULT_VOLUME_NAME_TEMPLATE
    size_gib: int = 10
    volume_type: str | None = None
    #: create -> available, attach -> in-use, detach -> available: each wait is bounded by its own timeout
    create_timeout_seconds: float = 300.0
    attach_timeout_seconds: float = 300.0
    detach_timeout_seconds: float = 300.0
    poll_interval_seconds: float = 2.0


@dataclass(frozen=True)
class HomeVolumeRef:
    """Which volume: its name and the tags that make it this hub's volume of this user (and server)."""

    name: str
    tags: Mapping[str, str] = field(default_factory=dict)


def home_volume_ref(template: str, *, hub_id: str, username: str, servername: str) -> HomeVolumeRef:
    """The home volume of ``username``'s server ``servername`` (shared by the user's servers unless the
    template names ``{servername}``)."""
    owner = volume_server_name(template, servername)
    return HomeVolumeRef(
        name=volume_name(template, username=username, servername=servername, hub_id=hub_id),
        tags=volume_tags(hub_id=hub_id, username=username, servername=owner),
    )


def attached_elsewhere(volume: Volume, server_id: str | None) -> list[str]:
    """The servers other than ``server_id`` that hold ``volume``."""
    return [s for s in volume.attached_to if s != server_id]


@dataclass
class HomeVolumes:
    """Home volume work for one server; every wait has a deadline, every cloud call the client's budget.
    ``report`` receives progress messages for the user; ``log_name`` names the server in the log."""

    client: CloudClient
    settings: HomeVolumeSettings
    log: logging.Logger | logging.LoggerAdapter
    log_name: str
    report: Report | None = None

    def say(self, message: str) -> None:
        if self.report is not None:
            self.report(message)

    # ------------------------------------------------------------------------------ lookups
    async def find(self, ref: HomeVolumeRef) -> Volume | None:
        """The volume of ``ref`` (name and tags), or None. Two of them is refused, never guessed between."""
        found = [v for v in await self.client.find_volumes(name=ref.name, tags=ref.tags) if v.status != "deleting"]
        if len(found) > 1:
            ids = ", ".join(sorted(v.id for v in found))
            raise HomeVolumeError(
                "You have more than one home volume; please tell the administrator.",
                f"{self.log_name}: {len(found)} volumes named {ref.name} with this hub's tags ({ids}):"
                " keep the one holding the user's files and delete the others",
                reason="duplicate",
            )
        return found[0] if found else None

    async def wait_for(self, volume_id: str, wanted: tuple[str, ...], timeout_seconds: float, doing: str) -> Volume:
        """Poll until the volume's status is one of ``wanted``; a volume in error, gone or still elsewhere
        after ``timeout_seconds`` raises. A transient cloud error is one poll lost, not a failure."""
        deadline = time.monotonic() + timeout_seconds
        last: Volume | None = None
        while True:
            try:
                last = await self.client.get_volume(volume_id)
            except CloudError as e:
                if not e.transient:
                    raise
                self.log.info("%s: reading volume %s failed (%s); polling on", self.log_name, volume_id, e)
            else:
                if last is None:
                    raise HomeVolumeError(
                        "Your home volume disappeared; please tell the administrator.",
                        f"{self.log_name}: volume {volume_id} is gone while {doing}",
                        reason="gone", volume_id=volume_id,
                    )  # fmt: skip
                if last.status in wanted:
                    return last
                if last.failed:
                    raise self.in_error(last, doing)
            if time.monotonic() + self.settings.poll_interval_seconds > deadline:
                status = last.status if last else "unknown"
                raise HomeVolumeError(
                    f"Your home volume is not ready after {timeout_seconds:.0f} seconds (it is {status});"
                    " please try again in a few minutes.",
                    f"{self.log_name}: volume {volume_id} still {status} after {timeout_seconds:.0f}s {doing}",
                    reason="timeout", volume_id=volume_id,
                )  # fmt: skip
            await asyncio.sleep(self.settings.poll_interval_seconds)

    def in_error(self, volume: Volume, doing: str) -> HomeVolumeError:
        return HomeVolumeError(
            "Your home volume is in an error state; your files are kept. Please tell the administrator.",
            f"{self.log_name}: volume {volume.name} ({volume.id}) is {volume.status} while {doing}",
            reason="error", volume_id=volume.id,
        )  # fmt: skip

    # ------------------------------------------------------------------------------ ensure
    async def ensure(self, ref: HomeVolumeRef) -> Volume:
        """The volume of ``ref``, created if there is none; returned once Cinder has it ready (``available``,
        or already attached: :meth:`attach` sorts that out)."""
        volume = await self.find(ref)
        if volume is None:
            volume = await self.create(ref)
        elif volume.failed:
            raise self.in_error(volume, "looking for the home volume")
        if volume.status == "creating":
            volume = await self.wait_for(volume.id, READY, self.settings.create_timeout_seconds,
                                         "waiting for its creation")  # fmt: skip
        return volume

    async def create(self, ref: HomeVolumeRef) -> Volume:
        """Create the volume; after an unknown outcome, adopt what landed or create once more."""
        size, vtype = self.settings.size_gib, self.settings.volume_type
        self.say(f"Creating your home volume ({size} GiB)")
        for try_number in range(2):
            try:
                volume = await self.client.create_volume(ref.name, size, volume_type=vtype, metadata=ref.tags)
                self.log.info("%s: created volume %s (%s)", self.log_name, volume.name, volume.id)
                return volume
            except CreateOutcomeUnknown as e:
                self.log.warning("%s: create of volume %s: outcome unknown (%s); looking it up",
                                 self.log_name, ref.name, e)  # fmt: skip
                found = await self.find_landed(ref)
                if found is not None:
                    return found
                if try_number == 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def find_landed(self, ref: HomeVolumeRef) -> Volume | None:
        """After an unknown create outcome: look for the volume for up to one API timeout (Cinder may still be
        handling the request whose answer was lost)."""
        deadline = time.monotonic() + self.client.timeout_seconds
        while True:
            found = await self.find(ref)
            if found is not None or time.monotonic() + self.settings.poll_interval_seconds > deadline:
                return found
            await asyncio.sleep(self.settings.poll_interval_seconds)

    # ------------------------------------------------------------------------------ attach / detach
    async def attach(self, volume_id: str, server_id: str) -> Volume:
        """Attach the volume to ``server_id`` and wait until it is ``in-use`` there. A volume held by another
        server, in error, or whose attach the compute host gave up is a :class:`HomeVolumeError`; a volume
        still detaching from a previous server is waited for (bounded)."""
        volume = await self.wait_for(volume_id, USABLE, self.settings.create_timeout_seconds, "before attaching")
        if server_id in volume.attached_to and volume.status == "in-use":
            return volume
        if volume.status in MOVING:
            self.say("Waiting for your home volume to be free")
            volume = await self.wait_for(volume_id, ("available", "in-use"), self.settings.detach_timeout_seconds,
                                         "waiting for a previous attach or detach")  # fmt: skip
        self.refuse_if_elsewhere(volume, server_id)
        self.say("Attaching your home volume")
        if volume.status == "available":
            try:
                device = await self.client.attach_volume(server_id, volume_id)
                self.log.info("%s: attaching volume %s as %s", self.log_name, volume_id, device)
            except CloudError as e:
                volume = await self.wait_for(volume_id, USABLE, self.settings.attach_timeout_seconds, "attaching")
                if volume.status == "available" or attached_elsewhere(volume, server_id):
                    raise HomeVolumeError(
                        "Your home volume could not be attached; please try again.",
                        f"{self.log_name}: attach of volume {volume_id} to {server_id} failed: {e}",
                        reason="attach-failed", volume_id=volume_id,
                    ) from e  # fmt: skip
                self.log.info("%s: attach request failed (%s) but volume %s is %s: waiting",
                              self.log_name, e, volume_id, volume.status)  # fmt: skip
        volume = await self.wait_for(volume_id, ("in-use", "available"), self.settings.attach_timeout_seconds,
                                     f"attaching to {server_id}")  # fmt: skip
        self.refuse_if_elsewhere(volume, server_id)
        if volume.status != "in-use" or server_id not in volume.attached_to:
            raise HomeVolumeError(
                "Your home volume could not be attached; please try again.",
                f"{self.log_name}: volume {volume_id} went back to {volume.status} (attached to"
                f" {list(volume.attached_to)}): the attach to {server_id} failed on the compute host",
                reason="attach-failed", volume_id=volume_id,
            )  # fmt: skip
        return volume

    async def ready_for_boot(self, volume: Volume) -> Volume:
        """The volume once it can be attached to a new server at boot (``available``): a volume still
        attaching or detaching is waited for (bounded); one in error or held by a server is refused."""
        if volume.status in MOVING:
            self.say("Waiting for your home volume to be free")
            volume = await self.wait_for(volume.id, ("available", "in-use"), self.settings.detach_timeout_seconds,
                                         "waiting for a previous attach or detach")  # fmt: skip
        if volume.failed:
            raise self.in_error(volume, "before booting with it")
        self.refuse_if_elsewhere(volume, None)
        return volume

    def refuse_if_elsewhere(self, volume: Volume, server_id: str | None) -> None:
        others = attached_elsewhere(volume, server_id)
        if others:
            raise HomeVolumeError(
                "Your home volume is in use by another of your servers; stop that server first.",
                f"{self.log_name}: volume {volume.id} is attached to {', '.join(others)}, not {server_id}",
                reason="attached-elsewhere", volume_id=volume.id,
            )  # fmt: skip

    async def detach(self, volume_id: str, server_id: str) -> bool:
        """Detach the volume from ``server_id`` and wait until it is free. True once it is (or it was not
        attached there); False when the detach goes on past the timeout: reported, the volume is kept and
        the next attach waits for it."""
        volume = await self.client.get_volume(volume_id)
        if volume is None:
            self.log.warning("%s: volume %s to detach is gone", self.log_name, volume_id)
            return True
        if volume.status in ("attaching", "reserved"):  # Cinder does not say to which server yet
            volume = await self.wait_for(volume_id, ("in-use", "available"), self.settings.attach_timeout_seconds,
                                         "finishing an attach before detaching")  # fmt: skip
        if server_id not in volume.attached_to:
            return True
        if volume.status == "in-use":
            self.say("Detaching your home volume")
            try:
                if not await self.client.detach_volume(server_id, volume_id):
                    return True  # Nova: not attached to that server (any more)
            except CloudError as e:
                self.log.warning("%s: detach request of volume %s failed (%s); checking its status",
                                 self.log_name, volume_id, e)  # fmt: skip
        try:
            await self.wait_for(volume_id, ("available",), self.settings.detach_timeout_seconds,
                                f"detaching from {server_id}")  # fmt: skip
        except HomeVolumeError as e:
            if e.reason != "timeout":
                raise
            self.log.warning("%s: volume %s is still detaching after %.0fs; it is kept and the next start waits"
                             " for it", self.log_name, volume_id, self.settings.detach_timeout_seconds)  # fmt: skip
            self.say("Your home volume is still detaching; it is kept")
            return False
        return True

    # ------------------------------------------------------------------------------ delete_forever
    async def rename(self, old: HomeVolumeRef, new: HomeVolumeRef) -> Volume | None:
        """Give the volume of ``old`` the name and tags of ``new`` (a named server renamed), so that the next
        start finds it; None when ``old`` has no volume. Refused when ``new`` already has one."""
        volume = await self.find(old)
        if volume is None:
            return None
        if await self.find(new) is not None:
            raise HomeVolumeError(
                "A home volume for the new name already exists; please tell the administrator.",
                f"{self.log_name}: volume {new.name} exists; volume {volume.id} ({old.name}) not renamed",
                reason="duplicate", volume_id=volume.id,
            )  # fmt: skip
        renamed = await self.client.update_volume(volume.id, new.name, {**volume.metadata, **new.tags})
        self.log.info("%s: home volume %s (%s) renamed to %s", self.log_name, old.name, volume.id, new.name)
        return renamed

    async def delete_forever(self, ref: HomeVolumeRef) -> list[str]:
        """Delete this hub's home volume(s) of ``ref`` (name and every tag must match: never another hub's,
        user's or server's). A volume still attached is detached first. The ids deleted."""
        deleted = []
        for volume in await self.client.find_volumes(name=ref.name, tags=ref.tags):
            if volume.status == "deleting":
                continue
            for server_id in volume.attached_to:
                if not await self.detach(volume.id, server_id):
                    raise HomeVolumeError(
                        "Your home volume could not be deleted: it is still detaching.",
                        f"{self.log_name}: volume {volume.id} still detaching from {server_id}; not deleted",
                        reason="timeout", volume_id=volume.id,
                    )  # fmt: skip
            self.log.info("%s: deleting home volume %s (%s) forever", self.log_name, volume.name, volume.id)
            await self.client.delete_volume(volume.id)
            deleted.append(volume.id)
        return deleted
