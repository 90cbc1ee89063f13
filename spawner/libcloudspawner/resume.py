"""What outlives a server: its VM kept between stops (``stop_action``) and its home volume.

:class:`KeepTraits` holds the settings (configured as ``c.LibcloudSpawner.<name>``, checked by
:func:`settings.check`); :class:`KeptServer` adds the spawner's side (resume or replace a kept VM, the home
volume to boot with, delete_forever), mixed into ``LibcloudSpawner`` as ``CloudAccess`` is. :class:`Keeper`
does the cloud work of parking a VM (power off or shelve) and waking it (power on or unshelve), bounded by
deadlines; it knows nothing of JupyterHub. :func:`start_plan` decides, without a cloud call, what a start
does with a kept VM.

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
from typing import TYPE_CHECKING, Any

from traitlets import Enum, Float, HasTraits, Integer, Unicode

from . import errors, internal_tls
from .cloud import CloudClient, CloudError, Instance
from .naming import DEFAULT_VOLUME_NAME_TEMPLATE
from .volumes import HomeVolumeError, HomeVolumeRef, HomeVolumes, HomeVolumeSettings, home_volume_ref

if TYPE_CHECKING:
    from .options import Selection
    from .provision import Provisioner

STOP_ACTIONS = ("delete", "stop", "shelve")
#: stop_action -> (Nova server action, vm_state it reaches)
#: (a cloud whose shelved_offload_time is not 0 leaves a shelved VM SHELVED on its host for a while)
PARK = {"stop": ("os-stop", ("stopped",)), "shelve": ("shelve", ("shelved_offloaded", "shelved"))}
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

    async def wait_vm_state(self, instance_id: str, wanted: tuple[str, ...]) -> Instance:
        """Poll until the VM's vm_state is one of ``wanted`` with no task under way; KeepError if it goes to ERROR,
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
                if instance.vm_state in wanted and not instance.task_state:
                    return instance
                if instance.state == "error":
                    raise KeepError(f"instance {instance_id} of {self.log_name} went to ERROR")
            if time.monotonic() + self.poll_interval_seconds > deadline:
                raise KeepError(f"instance {instance_id} of {self.log_name} is not {' or '.join(wanted)} after"
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


class KeptServer(KeepTraits):
    """The spawner's side of kept VMs and home volumes (mixed into ``LibcloudSpawner``: ``self`` is the
    spawner, with its state ``instance_id``, ``kept``, ``booted_image``/``booted_size``, ``volume_id``)."""

    # the spawner's, declared for readers and type checkers
    instance_id: str | None
    volume_id: str | None
    kept: str | None
    _kept_token: str
    _fault: str | None
    _progress: Any
    log: Any

    def _volume_ref(self) -> HomeVolumeRef:
        return home_volume_ref(
            self.home_volume_name_template, hub_id=self.hub_id, username=self.user.name, servername=self.name or ""
        )

    async def _rename_home_volume(self, client: CloudClient, old_name: str, new_name: str) -> str | None:
        """A named server with its own home volume is renamed: the volume takes the new name and tags, so that
        the next start finds the user's files (None: the server has no volume of its own)."""
        template = self.home_volume_name_template
        if "{servername}" not in template or not (self.home_volume_size_gib or self.volume_id):
            return None
        refs = [home_volume_ref(template, hub_id=self.hub_id, username=self.user.name, servername=name)
                for name in (old_name, new_name)]  # fmt: skip
        volume = await self._homes(client).rename(*refs)
        return volume.id if volume is not None else None

    def _homes(self, client: CloudClient) -> HomeVolumes:
        return HomeVolumes(client, self.home_volume_settings(), self.log, self._log_name,
                           report=lambda message: self._progress.emit(15, message))  # fmt: skip

    def _keeper(self, client: CloudClient) -> Keeper:
        return Keeper(client, self.log, self._log_name, self.startup_poll_interval_seconds,
                             self.stop_timeout_seconds)  # fmt: skip

    def _keep(self, how: str) -> None:
        """The VM outlives this server: JupyterHub keeps the state and the server's token (will_resume)."""
        if not self.kept:
            self._kept_token = self.api_token
        self.kept = how
        self.will_resume = True

    async def _resume_kept(self, provisioner: Provisioner, selection: Selection) -> str | None:
        """Bring back the server's kept VM and return its URL; None when a fresh VM is to boot (none kept, the
        kept one is gone, or it was replaced because the user chose another image or size)."""
        if not (self.instance_id and self.kept):
            return None
        plan = start_plan(kept=self.kept, booted=(self.booted_image, self.booted_size),
                                 wanted=(selection.image, selection.size))  # fmt: skip
        instance = await provisioner.client.get_node(self.instance_id)
        if instance is None or instance.deleting:
            self.log.warning("Kept instance %s of %s is gone; booting a fresh one", self.instance_id, self._log_name)
            self._forget_instance()
            return None
        if instance.state == "error" and not self._data_safe():
            fault = self._fault or await provisioner.client.fault_message(instance.id)
            raise errors.cloud_unavailable(
                f"Your kept virtual machine is in an error state ({fault or 'no reason given'}); its disk is kept."
                f" Please tell the administrator.",
                f"Kept instance {instance.id} of {self._log_name} is in ERROR ({fault}); kept for the administrator"
                " (its disk may hold data): fix it (e.g. openstack server set --state active) or delete the server",
            )
        if plan == "replace" or instance.state == "error":
            why = "another image or size was chosen" if plan == "replace" else f"it is in ERROR ({self._fault})"
            self._progress.emit(8, "Replacing your kept virtual machine: " + why.split(" (")[0])
            self.log.info("Replacing kept instance %s of %s: %s", instance.id, self._log_name, why)
            await self._drop_vm(provisioner)
            return None
        self._progress.emit(20, "Resuming your virtual machine")
        await self._keeper(provisioner.client).wake(instance)
        instance = await provisioner.wait_running(instance, lambda i: bool(self._address(i)))
        self.instance_address = self._address(instance)
        url = f"{internal_tls.scheme(self)}://{self.instance_address}:{self.port}"  # a kept VM keeps its certificate
        self._progress.emit(60, f"Virtual machine running at {self.instance_address}; waiting for Jupyter to answer")
        base_url = self.server.base_url if self.server is not None else f"/user/{self.user.name}/"
        await provisioner.wait_http(instance.id, url + base_url.rstrip("/") + "/api", internal_tls.client_context(self))
        if self._kept_token:
            self.api_token = self._kept_token  # the server holds it: JupyterHub kept it (will_resume)
        self.kept, self._kept_token, self._fault = None, "", None
        self.log.info("Resumed instance %s for %s", instance.id, self._log_name)
        self._progress.emit(95, "Jupyter is answering")
        return url

    def _data_safe(self) -> bool:
        """Whether deleting the server's VM loses nothing the user expects to keep: its root disk is
        disposable (``delete`` mode) or the user's files are on the home volume."""
        return self.stop_action == "delete" or bool(self.volume_id)

    async def _home_volume(self, client: CloudClient) -> str | None:
        """The home volume to boot with (created at the first start), free for a new VM; None without."""
        if not self.home_volume_size_gib:
            return None
        homes = self._homes(client)
        volume = await homes.ready_for_boot(await homes.ensure(self._volume_ref()))
        self.volume_id = volume.id
        return volume.id

    async def _drop_vm(self, provisioner: Provisioner, *, wait: bool = True) -> bool:
        """Delete the server's VM, its home volume detached first (bounded; Nova detaches it with the deletion
        otherwise). The volume is never deleted here. True if the VM was seen gone; ``CloudError`` if it could
        not be deleted."""
        assert self.instance_id
        if self.volume_id:
            try:
                await self._homes(provisioner.client).detach(self.volume_id, self.instance_id)
            except (HomeVolumeError, CloudError) as e:
                self.log.warning("Detaching volume %s of %s before its VM's deletion: %s", self.volume_id,
                                 self._log_name, e)  # fmt: skip
        name = self.instance_name or self._instance_name()
        gone = await provisioner.delete(self.instance_id, name, self._tags(), wait=wait)
        self._forget_instance()
        return gone

    async def _poll_error(self, client: CloudClient, instance: Instance) -> int | None:
        """An instance in ERROR: the cloud's reason is logged and kept for the next start's message. It is
        deleted only where no data can be lost (``delete`` mode, or the files are on the home volume);
        otherwise it is kept for the administrator and the next start says so."""
        self._fault = await client.fault_message(instance.id) or "the cloud recorded no reason"
        self.log.error("Instance %s of %s is in ERROR: %s", instance.id, self._log_name, self._fault)
        if not self._data_safe():
            self._keep("error")
            return 1
        if not await self._provisioner(client).remove_broken(instance):
            return None
        self._forget_instance()
        return 1

    async def delete_forever(self):
        """The user or this named server is deleted: its kept VM and its home volume go (nothing else ever
        deletes a home volume). A volume the user's servers share goes with the user's default server only."""
        client = self._client()
        if self.instance_id:
            await self._drop_vm(self._provisioner(client))
        owns_volume = not self.name or "{servername}" in self.home_volume_name_template
        if owns_volume and (self.home_volume_size_gib or self.volume_id):
            deleted = await self._homes(client).delete_forever(self._volume_ref())
            self.log.info("Deleted home volume(s) %s of %s", ", ".join(deleted) or "(none)", self._log_name)
            self.volume_id = None
