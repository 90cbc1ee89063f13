"""A server on a new VM: the hub-wide cap, the home volume, the user-data, the create (with recovery of lost
and late creates, see ``provision``), the waits until the VM runs and Jupyter answers, and the cleanup of a
failed attempt.

Mixed into ``LibcloudSpawner`` (``self`` is the spawner); ``start()`` takes this path when neither a kept VM
nor the warm pool serves the start.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from traitlets import HasTraits

from . import errors, internal_tls, limits, options, pool, userdata
from .cloud import CloudError
from .provision import CLEANUP_WAIT_SECONDS, CreateAttempt, Provisioner, SpawnerView
from .volumes import HomeVolumeError


class FreshBoot(HasTraits):
    """The spawner's fresh-boot path."""

    # the spawner's, declared for readers and type checkers
    instance_id: str | None
    instance_name: str | None
    instance_address: str | None
    volume_id: str | None
    log: Any

    def _refuse_if_hub_full(self) -> None:
        in_pool = pooled.instance_ids() if (pooled := pool.for_spawner(self)) else set()
        if limits.over_cap(self.max_instances, self._session(), self._deletions().pending_ids() | in_pool, self):
            raise errors.hub_full(self.max_instances)

    def _render_userdata(self, tls_files=()) -> str:
        template = userdata.load_template(self.cloudinit_template) if self.cloudinit_template else None
        try:
            return userdata.render_userdata(
                username=self.linux_user,
                env=self.get_env(),
                cmd=[*self.cmd, *self.get_args()],
                template=template,
                default_user=bool(self.userserver_keyname),
                home_volume_id=self.volume_id if self.home_volume_size_gib else None,
                metadata_service=self.metadata_service_for_server,
                tls_files=tls_files,
            )
        except userdata.InvalidEnvironmentValue as e:
            raise errors.invalid_environment(e.key, f"LibcloudSpawner cannot start {self._log_name}: {e}") from None
        except userdata.UserDataError as e:
            raise errors.configuration(
                "The server's start-up script could not be prepared",
                f"LibcloudSpawner cannot render the user-data for {self._log_name}: {e}",
                reason="userdata",
            ) from None

    async def _start_fresh(self, provisioner: Provisioner, selection: options.Selection) -> str:
        """Boot a new VM for this server; on any failure its instance is removed (in the background past a few
        seconds, which stop() and the next start wait for) and the user reads what went wrong."""
        self._refuse_if_hub_full()
        try:
            volume_id = await self._home_volume(provisioner.client)
        except (CloudError, HomeVolumeError) as e:  # the volume stays as it is
            raise errors.for_user(e, self._log_name) from e
        user_data = self._render_userdata()
        attempt = CreateAttempt(name=self._instance_name(), server_tags=self._tags())
        attempt.ignore.update(self._deletions().pending_ids())  # being deleted in the background
        self.instance_name = attempt.name
        self._starting = True
        limits.STARTING.add(self)
        try:
            return await self._boot(provisioner, selection, user_data, attempt, volume_id)
        except BaseException as e:
            self._background.start_cleanup(provisioner.cleanup(attempt))
            self._forget_instance()
            if isinstance(e, asyncio.CancelledError):
                self.log.warning("Start of %s cancelled (timeout?); removing its instance", self._log_name)
                raise
            # the user's message must reach the hub before its own start_timeout cancels start(): a few
            # seconds for the cleanup, then it goes on in the background (stop() and the next start wait for it)
            await self._background.wait_cleanup(CLEANUP_WAIT_SECONDS, self._log_name)
            raise errors.for_user(e, self._log_name) from e
        finally:
            self._starting = False
            limits.STARTING.discard(self)
            if attempt.doubtful:
                self._background.start_late_watch(
                    provisioner, attempt, SpawnerView(starting=lambda: self._starting, in_use=lambda: self.instance_id)
                )

    async def _boot(
        self, provisioner: Provisioner, selection, user_data: str, attempt: CreateAttempt, volume_id: str | None
    ) -> str:
        """A fresh VM: look up what to boot, create it (with recovery), wait until it runs and Jupyter answers."""
        emit = self._progress.emit
        emit(10, f"Looking up image {selection.image_display} and size {selection.size_display}")
        port = None
        if self.internal_ssl:  # the certificate names the VM's address: its port first, the user-data carries it
            port, user_data = await internal_tls.cold_boot(self, provisioner, attempt)
        instance = await provisioner.create_fresh(
            attempt,
            image=selection.image,
            size=selection.size,
            network=self.userserver_net,
            user_data=user_data,
            extra_metadata=self.instance_metadata,
            config_drive=self.config_drive,
            key_name=self.userserver_keyname,
            security_groups=self.security_groups,
            volume_ids=[volume_id] if volume_id else [],
            port_id=port.id if port else None,
        )
        self.instance_id = instance.id
        self.booted_image, self.booted_size = selection.image, selection.size
        self._known_since = time.monotonic()  # fleet listings older than this may lack it
        self._persist_state()
        self.log.info("Created instance %s (%s) for %s", attempt.name, instance.id, self._log_name)

        emit(30, "Virtual machine created; the cloud is booting it")
        instance = await provisioner.wait_running(instance, lambda i: bool(self._address(i)))
        self.instance_address = self._address(instance)
        self._persist_state()
        url = f"{internal_tls.scheme(self)}://{self.instance_address}:{self.port}"
        emit(60, f"Virtual machine running at {self.instance_address}; waiting for Jupyter to answer")
        base_url = self.server.base_url if self.server is not None else f"/user/{self.user.name}/"
        await provisioner.wait_http(instance.id, url + base_url.rstrip("/") + "/api", internal_tls.client_context(self))
        if attempt.doubtful:
            # a create whose answer was lost may still have landed late, next to the one in use
            await provisioner.remove_duplicates(attempt.name, attempt.tags, keep=instance.id)
        emit(95, "Jupyter is answering")
        return url
