"""What outlives a server: its VM kept between stops (``stop_action``) and its home volume.

:class:`KeepTraits` holds the settings (mixed into ``LibcloudSpawner``, configured as
``c.LibcloudSpawner.<name>``, checked by :func:`settings.check`). :class:`Keeper` does the cloud work of
parking a VM (power off or shelve) and waking it (power on or unshelve), bounded by deadlines; it knows
nothing of JupyterHub. :func:`start_plan` decides, without a cloud call, what a start does with a kept VM.

State a kept VM leaves in the spawner's state: ``instance_id`` (as any server), ``kept`` (how it was kept:
``stop``, ``shelve``, or ``off`` for a VM found powered off behind the hub's back), ``image`` and ``size``
(what it was booted from, to see whether the user's selection changed) and ``api_token`` (the token the VM's
server holds: a resumed server keeps authenticating with it). ``volume_id`` names the home volume.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from traitlets import Enum, Float, HasTraits, Integer, Unicode

from .cloud import CloudClient, CloudError, Instance
from .naming import DEFAULT_VOLUME_NAME_TEMPLATE
from .volumes import HomeVolumeSettings

STOP_ACTIONS = ("delete", "stop", "shelve")
#: stop_action -> (Nova server action, vm_state it reaches)
PARK = {"stop": ("os-stop", "stopped"), "shelve": ("shelve", "shelved_offloaded")}
#: vm_state of a kept VM -> the action that wakes it
WAKE = {"stopped": "os-start", "shelved": "unshelve", "shelved_offloaded": "unshelve"}


class KeepTraits(HasTraits):
    """The settings of what outlives a server (a profile may override each)."""

    stop_action = Enum(
        STOP_ACTIONS,
        default_value="delete",
        help="""
        What stopping a server does with its VM: `delete` (default: the VM and its root disk are deleted),
        `stop` (powered off and kept: its disk and address stay, and it keeps using its Nova quota of
        instances, cores and RAM), `shelve` (Nova's shelve: the VM is offloaded from its host, its disk kept as
        an image; it keeps its instance quota but frees the host). The next start of the server resumes the
        kept VM (same API token) unless the user chose another image or size, which boots a fresh VM.
        """,
    ).tag(config=True)

    home_volume_size_gib = Integer(
        0,
        help="""
        Size in GiB of each user's home volume (Cinder), created at the user's first start, attached at boot
        and mounted on the user's home; kept when servers stop, deleted only when the hub deletes the user
        (or the named server that owns it). 0 (default): no home volume. Needs a Cinder v3 endpoint.
        """,
    ).tag(config=True)

    home_volume_type = Unicode(
        None, allow_none=True, help="Cinder volume type of the home volumes (unset: the cloud's default)."
    ).tag(config=True)

    home_volume_name_template = Unicode(
        DEFAULT_VOLUME_NAME_TEMPLATE,
        help="""
        Name of the home volumes. Fields: `{username}`, `{servername}`, `{hub_id}`. Without `{servername}`
        (default) a user's servers share one volume (one server at a time); with it each named server has its
        own (like KubeSpawner's `pvc_name_template`).
        """,
    ).tag(config=True)

    home_volume_timeout_seconds = Float(
        300.0, help="Bound, in seconds, on each wait for a home volume (creating, attaching, detaching)."
    ).tag(config=True)

    def home_volume_settings(self) -> HomeVolumeSettings:
        timeout = self.home_volume_timeout_seconds
        return HomeVolumeSettings(
            name_template=self.home_volume_name_template,
            size_gib=self.home_volume_size_gib,
            volume_type=self.home_volume_type,
            create_timeout_seconds=timeout,
            attach_timeout_seconds=timeout,
            detach_timeout_seconds=timeout,
        )


def start_plan(*, kept: str | None, booted: tuple[str | None, str | None], wanted: tuple[str, str]) -> str:
    """What a start does with the server's saved VM: ``fresh`` (none kept), ``resume`` (same image and size),
    or ``replace`` (the user chose another image or size: the kept VM is deleted, a fresh one boots)."""
    if not kept:
        return "fresh"
    return "resume" if tuple(booted) == tuple(wanted) else "replace"


class KeepError(Exception):
    """A kept VM could not be parked or woken; ``str()`` is the log's detail."""


@dataclass
class Keeper:
    """Parks and wakes one server's VM; every wait is bounded by ``timeout_seconds``."""

    client: CloudClient
    log: logging.Logger | logging.LoggerAdapter
    log_name: str
    poll_interval_seconds: float
    timeout_seconds: float

    async def wait_vm_state(self, instance_id: str, wanted: str) -> Instance:
        """Poll until the VM's vm_state is ``wanted`` with no task under way; KeepError if it goes to ERROR,
        disappears, or is still elsewhere at the deadline. A transient cloud error is one poll lost."""
        deadline = time.monotonic() + self.timeout_seconds
        while True:
            instance: Instance | str | None
            try:
                instance = await self.client.get_node(instance_id)
            except CloudError as e:
                if not e.transient:
                    raise
                instance = "unknown"
            if instance is None:
                raise KeepError(f"instance {instance_id} of {self.log_name} is gone")
            if isinstance(instance, Instance):
                if instance.vm_state == wanted and not instance.task_state:
                    return instance
                if instance.state == "error":
                    raise KeepError(f"instance {instance_id} of {self.log_name} went to ERROR")
            if time.monotonic() + self.poll_interval_seconds > deadline:
                raise KeepError(f"instance {instance_id} of {self.log_name} is not {wanted} after"
                                f" {self.timeout_seconds:.0f}s")  # fmt: skip
            await asyncio.sleep(self.poll_interval_seconds)

    async def park(self, instance_id: str, mode: str) -> None:
        """Power the VM off (``stop``) or shelve it (``shelve``) and wait until it is. A VM already there is
        fine; a refused action (409: a task under way) is judged by the state the VM reaches."""
        action, wanted = PARK[mode]
        try:
            await self.client.server_action(instance_id, action)
        except CloudError as e:
            if e.status != 409:
                raise
            self.log.info("%s of instance %s of %s refused (%s); checking its state", action, instance_id,
                          self.log_name, e)  # fmt: skip
        self.log.info("Instance %s of %s: %s", instance_id, self.log_name, action)
        await self.wait_vm_state(instance_id, wanted)

    async def wake(self, instance: Instance) -> None:
        """Send the action that brings a kept VM back (power on, unshelve); a running VM needs none. The
        caller then waits for it to run and for Jupyter to answer, as for a fresh VM."""
        action = WAKE.get(instance.vm_state or "")
        if action is None:
            return
        try:
            await self.client.server_action(instance.id, action)
        except CloudError as e:
            if e.status != 409:
                raise
            self.log.info("%s of instance %s refused (%s); waiting for it to run", action, instance.id, e)
        self.log.info("Instance %s of %s: %s", instance.id, self.log_name, action)
