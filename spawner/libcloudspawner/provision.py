"""One user server's instances: create with recovery, waits for running and for HTTP, cleanup, deletion.

A :class:`Provisioner` works for one spawn of one server. It knows nothing of JupyterHub: it reports
progress through the ``emit`` callback and raises :mod:`errors` for the user; the spawner keeps the state.

Recovery of creates: a create whose answer was lost (timeout, 5xx, connection reset) may still have made
the instance, now or later. The attempt is then *doubtful*: the instance is looked up by name and tags
before anything is created again, every instance of the attempt that the server does not use is removed,
and a background watch (:meth:`Provisioner.watch_late_landing`) looks again for late arrivals.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from . import errors, naming, ports
from .cloud import CloudClient, CloudError, CreateOutcomeUnknown, Instance, settle_create
from .requests import create_request

# After a DELETE, how long an instance may show no deletion in progress before it is deleted again.
REDELETE_AFTER_SECONDS = 5.0
# Pause between two DELETEs of an instance that could not be deleted (transient errors).
STOP_RETRY_SECONDS = 2.0
# After a create with an unknown outcome found nothing: look again every this many seconds, for up to one
# api_timeout_seconds, before creating again (Nova may still be creating it after the request timed out).
LANDING_CHECK_SECONDS = 2.0
# ...and after such a create, look for a late instance again in the background, this many api_timeouts later.
LATE_LANDING_CHECKS = (2, 4, 8)
# How long a failed start waits for its instance's removal before reporting (the rest goes on in the background).
CLEANUP_WAIT_SECONDS = 3.0
# While the VM's state does not change, a progress message at least this often (seconds): a user whose VM
# Nova keeps building for minutes sees that the wait goes on, and for how long.
PENDING_REPORT_SECONDS = 60.0

Emit = Callable[[int, str], None]


def address_of(instance: Instance, address_type: str) -> str | None:
    """The address the hub connects to: ``private_first`` (default), ``public_first``, ``private``, ``public``."""
    private, public = list(instance.private_ips), list(instance.public_ips)
    order = {
        "private_first": private + public,
        "public_first": public + private,
        "private": private,
        "public": public,
    }[address_type]
    return order[0] if order else None


class CreateAttempt:
    """What a start created, or may have created: enough to clean up even if the create's answer was lost.

    ``server_tags`` identify the server (any start of it); ``tags`` add this attempt's own spawn id, and
    everything that runs after the start returned (cleanup, the late-landing watch) looks by ``tags``, so it
    never deletes an instance of another start of the same server."""

    def __init__(self, name: str, server_tags: Mapping[str, str]):
        self.name = name
        self.server_tags = dict(server_tags)
        self.spawn_id = naming.new_spawn_id()
        self.tags = {**self.server_tags, naming.TAG_SPAWN_ID: self.spawn_id}
        self.sent = False
        self.doubtful = False  # a create's outcome was unknown: another instance may land late
        self.instance_id: str | None = None
        self.pending: Any = None  # concurrent.futures.Future of the create request, while it runs
        self.ignore: set[str] = set()  # leftovers being deleted: not this attempt's
        self.port_sent = False  # a Neutron port was asked for (internal_ssl): the cleanup deletes it

    def track(self, pending: Any) -> None:
        self.pending = pending

    async def settle(self, timeout: float) -> Instance | None:
        """Wait (bounded) for an in-flight create request; the instance if it answered with one."""
        return await settle_create(self.pending, timeout)


@dataclass(frozen=True)
class SpawnerView:
    """What a late-landing watch asks of the spawner that started it: whether a new start of the server is
    under way, and which instance the server uses."""

    starting: Callable[[], bool]
    in_use: Callable[[], str | None]


class Background:
    """What a server's starts leave running after they return: the cleanup of a failed start (the next start
    and stop() wait for it) and the watch for a create that lands late."""

    def __init__(self, log: logging.Logger | logging.LoggerAdapter) -> None:
        self.log = log
        self.cleanup: asyncio.Future | None = None
        self.late_watch: asyncio.Future | None = None
        self._watched: tuple[Provisioner, CreateAttempt, float] | None = None

    @property
    def cleaning(self) -> bool:
        return self.cleanup is not None and not self.cleanup.done()

    def start_cleanup(self, work: Awaitable[None]) -> None:
        self.cleanup = asyncio.ensure_future(work)

    def start_late_watch(self, provisioner: Provisioner, attempt: CreateAttempt, spawner: SpawnerView) -> None:
        """Watch for a late arrival of ``attempt``'s create (see :meth:`Provisioner.watch_late_landing`)."""
        if self.late_watch is not None:
            self.late_watch.cancel()
        since = time.monotonic()
        self._watched = (provisioner, attempt, since)
        self.late_watch = asyncio.ensure_future(provisioner.watch_late_landing(attempt, since=since, spawner=spawner))

    def release_late_watch(self) -> None:
        """The server stopped (or its state was cleared): cancel the watch bound to the spawner's state. The
        attempt's own late arrivals are still removed (what is left of the checks, nothing kept), and nothing
        of another start, which carries another spawn id."""
        if self.late_watch is None or self.late_watch.done() or self._watched is None:
            return
        self.late_watch.cancel()
        provisioner, attempt, since = self._watched
        self._watched = None
        self.late_watch = asyncio.ensure_future(provisioner.watch_late_landing(attempt, since=since))

    async def wait_cleanup(self, timeout: float | None, log_name: str) -> None:
        """Wait (bounded; never cancelling it) for the cleanup of a failed start; it goes on if slower."""
        if not self.cleaning:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self.cleanup), timeout)  # type: ignore[arg-type]
        except asyncio.TimeoutError:
            self.log.info("Removal of the failed start's instance of %s goes on in the background", log_name)
        except Exception as e:
            self.log.warning("Cleanup after the failed start of %s failed: %s", log_name, e)


class Provisioner:
    """Cloud work for one server: everything here is bounded by a deadline or by the client's retry budget."""

    def __init__(
        self,
        client: CloudClient,
        *,
        log: logging.Logger | logging.LoggerAdapter,
        log_name: str,
        poll_interval_seconds: float,
        stop_timeout_seconds: float,
        emit: Emit | None = None,
        ports: bool = False,
    ) -> None:
        self.client = client
        self.log = log
        self.log_name = log_name
        self.poll_interval_seconds = poll_interval_seconds
        self.stop_timeout_seconds = stop_timeout_seconds
        self.emit: Emit = emit or (lambda progress, message: None)
        self.ports = ports  # the server's VMs boot on ports the spawner creates (internal_ssl): delete those too

    # ------------------------------------------------------------------------------ create
    async def remove_leftovers(self, attempt: CreateAttempt) -> None:
        """An instance with this name and these tags is a leftover of an interrupted start (hub crash): its
        API token is no longer valid, so it cannot be adopted. Remove it."""
        for leftover in await self.client.find_nodes(name=attempt.name, tags=attempt.server_tags):
            if not leftover.deleting and leftover.id not in attempt.ignore:
                self.log.warning("Removing leftover instance %s (%s) of %s", leftover.name, leftover.id, self.log_name)
                attempt.ignore.add(leftover.id)
                await self.client.destroy_node(leftover.id)

    async def create_fresh(
        self, attempt: CreateAttempt, *, image: str, size: str, network: str | None, **request: Any
    ) -> Instance:
        """Look up what to boot, remove leftovers of the server, create its instance (``request``: the rest of
        :func:`requests.create_request`'s arguments)."""
        found_image = await self.client.image(image)
        found_size = await self.client.size(size)
        networks = [await self.client.network(network)] if network else []
        # a key pair or security group the cloud lacks is the administrator's mistake: say so before creating
        if request.get("key_name"):
            await self.client.key_pair(request["key_name"])
        for group in request.get("security_groups") or ():
            await self.client.security_group(group)
        await self.remove_leftovers(attempt)
        self.emit(20, f"Creating virtual machine {attempt.name}")
        body = create_request(
            name=attempt.name, image=found_image, size=found_size, networks=networks, tags=attempt.tags, **request
        )
        return await self.create(body, attempt)

    async def create(self, request: Mapping[str, Any], attempt: CreateAttempt) -> Instance:
        """Create the instance; after an unknown outcome, adopt what landed or create once more."""
        for try_number in range(2):
            attempt.sent = True
            try:
                instance = await self.client.create_node(request, on_sent=attempt.track)
                break
            except CreateOutcomeUnknown as e:
                attempt.doubtful = True
                self.log.warning("Create of %s: outcome unknown (%s); looking it up", attempt.name, e)
                found = await self.find_created(attempt, landing_seconds=self.client.timeout_seconds)
                if found is not None:
                    instance = found
                    break
                if try_number == 1:
                    raise
                self.log.info("Instance %s was not created; creating it again", attempt.name)
        attempt.instance_id = instance.id
        return instance

    async def find_created(self, attempt: CreateAttempt, landing_seconds: float = 0.0) -> Instance | None:
        """After an unknown create outcome: let the request finish, then look the instance up by name+tags.

        Nothing found is not proof that nothing was created: the cloud may still be handling a request whose
        answer the client stopped waiting for. Look again for up to ``landing_seconds`` before giving up."""
        instance = await attempt.settle(self.client.timeout_seconds + 5)
        if instance is not None:
            return instance
        deadline = time.monotonic() + landing_seconds
        interval = min(LANDING_CHECK_SECONDS, max(landing_seconds / 4, 0.05))
        while True:
            found = [
                i
                for i in await self.client.find_nodes(name=attempt.name, tags=attempt.tags)
                if i.id not in attempt.ignore and not i.deleting
            ]
            if found or time.monotonic() + interval > deadline:
                break
            await asyncio.sleep(interval)
        for extra in found[1:]:
            self.log.warning("Removing duplicate instance %s (%s)", extra.name, extra.id)
            await self.client.destroy_node(extra.id)
        return found[0] if found else None

    async def remove_duplicates(self, name: str, tags: Mapping[str, str], *, keep: str | None) -> None:
        """Delete every instance of this server (same name and tags) except ``keep``: a create that landed
        after its request timed out. Best effort: a failure is logged (the reaper finds what is left)."""
        try:
            for inst in await self.client.find_nodes(name=name, tags=tags):
                if inst.id != keep and not inst.deleting:
                    self.log.warning(
                        "Removing duplicate instance %s (%s) of %s (a create that landed late)",
                        inst.name,
                        inst.id,
                        self.log_name,
                    )
                    await self.client.destroy_node(inst.id)
        except CloudError as e:
            self.log.warning("Could not look for duplicate instances of %s: %s", self.log_name, e)

    async def watch_late_landing(
        self, attempt: CreateAttempt, *, since: float, spawner: SpawnerView | None = None
    ) -> None:
        """After a create whose outcome was unknown, Nova may carry the request out long after the spawner
        stopped waiting for it. Look again in the background (LATE_LANDING_CHECKS api timeouts after
        ``since``, a ``time.monotonic()``; checks already past are skipped) and delete any instance of this
        attempt (its spawn id) that the ``spawner`` does not use, unless a new start of it is in progress."""
        for factor in LATE_LANDING_CHECKS:
            delay = since + factor * self.client.timeout_seconds - time.monotonic()
            if delay < 0:
                continue
            await asyncio.sleep(delay)
            if spawner is not None and spawner.starting():
                continue
            await self.remove_duplicates(attempt.name, attempt.tags, keep=spawner.in_use() if spawner else None)

    # ------------------------------------------------------------------------------ waits
    async def wait_running(self, instance: Instance, has_address: Callable[[Instance], bool]) -> Instance:
        """Poll until the instance runs with an address; a clear error if it fails or disappears."""
        progress = 30
        changed_at = reported_at = time.monotonic()
        while True:
            if instance.state == "running" and has_address(instance):
                return instance
            if instance.state == "error":
                fault = await self.client.fault_message(instance.id)
                raise errors.instance_error(
                    fault,
                    f"Instance {instance.name} ({instance.id}) of {self.log_name} is in ERROR: "
                    + (fault or "Nova recorded no fault"),
                )
            if instance.deleting:
                raise errors.instance_gone("Your server's virtual machine was deleted while starting.")
            await asyncio.sleep(self.poll_interval_seconds)
            progress = min(progress + 2, 55)
            try:
                latest = await self.client.get_node(instance.id)
            except CloudError as e:
                if not e.transient:
                    raise
                self.log.warning("Could not check instance %s (%s); still waiting", instance.id, e)
                continue
            if latest is None:
                raise errors.instance_gone("Your server's virtual machine disappeared while starting.")
            now = time.monotonic()
            if latest.state != instance.state or (latest.task_state != instance.task_state):
                self.emit(progress, f"Virtual machine {latest.state} ({latest.task_state or 'no task'})")
                changed_at = reported_at = now
            elif now - reported_at >= PENDING_REPORT_SECONDS:
                self.emit(
                    progress,
                    f"Virtual machine still {latest.state} ({latest.task_state or 'no task'})"
                    f" after {now - changed_at:.0f}s",
                )
                reported_at = now
            instance = latest

    async def wait_http(self, instance_id: str, api_url: str, ssl_context: ssl.SSLContext | None = None) -> None:
        """Poll the server's API until it answers below 500; every fifth miss, check the VM still exists.
        ``ssl_context``: over https, as the hub (its internal_ssl client certificate); a certificate that does not
        verify fails the start at once."""
        http = AsyncHTTPClient()
        started = time.monotonic()
        checks = 0
        while True:
            try:
                request = HTTPRequest(
                    api_url, connect_timeout=5, request_timeout=10, follow_redirects=False, ssl_options=ssl_context
                )
                response = await http.fetch(request, raise_error=False)
                code = response.code
            except ssl.SSLCertVerificationError as e:
                raise errors.configuration(
                    "Your server's TLS certificate was refused by the hub",
                    f"internal_ssl: the server of {self.log_name} at {api_url} presents a certificate the hub does"
                    f" not accept: {e.verify_message}",
                    reason="internal-tls",
                ) from None
            except (OSError, HTTPClientError) as e:
                code = getattr(e, "code", 599)
            if code != 599 and code < 500:
                self.log.debug("%s answered %s after %.0fs", api_url, code, time.monotonic() - started)
                return
            checks += 1
            if checks % 5 == 0:
                # is the VM still there? (an ERROR or deleted instance will never answer)
                try:
                    latest: Instance | str | None = await self.client.get_node(instance_id, retries=1)
                except CloudError as e:
                    self.log.warning("Could not check instance %s (%s); still waiting for Jupyter", instance_id, e)
                    latest = "unknown"
                if latest is None or (isinstance(latest, Instance) and latest.state in ("error", "terminated")):
                    raise errors.instance_gone("Your server's virtual machine stopped before Jupyter started.")
                self.emit(
                    min(60 + checks, 90), f"Still waiting for Jupyter to answer ({time.monotonic() - started:.0f}s)"
                )
            await asyncio.sleep(self.poll_interval_seconds)

    # ------------------------------------------------------------------------------ cleanup and deletion
    async def cleanup(self, attempt: CreateAttempt) -> None:
        """Remove what a failed, timed-out or cancelled start created (also when the create was lost)."""
        ids = set()
        if attempt.instance_id:
            ids.add(attempt.instance_id)
        elif attempt.sent:
            instance = await attempt.settle(self.client.timeout_seconds + 5)
            if instance is not None:
                ids.add(instance.id)
            try:
                found = await self.client.find_nodes(name=attempt.name, tags=attempt.tags)
                ids.update(i.id for i in found if i.id not in attempt.ignore)
            except CloudError as e:
                self.log.error(
                    "Could not look for instance %s after a failed start (%s); the reaper will find it",
                    attempt.name,
                    e,
                )
        for instance_id in ids:
            self.log.info(
                "Deleting instance %s (%s) of the failed start of %s", attempt.name, instance_id, self.log_name
            )
            try:
                await self.client.destroy_node(instance_id)
                await self.wait_gone(instance_id)
            except CloudError as e:
                self.log.error(
                    "Could not delete instance %s (%s) after a failed start: %s", attempt.name, instance_id, e
                )
        if attempt.port_sent:
            await self.remove_ports(attempt.name, attempt.server_tags.get(naming.TAG_HUB_ID, ""), gone=ids)

    async def remove_ports(self, name: str, hub_id: str, *, gone=frozenset()) -> None:
        """Delete this hub's unused ports named ``name`` (:func:`ports.delete_unbound`)."""
        await ports.delete_unbound(self.client, self.log, hub_id=hub_id, name=name, owner=self.log_name, gone=gone)

    async def remove_broken(self, instance: Instance) -> bool:
        """Delete an instance found in ERROR, stopped or deleted behind the hub's back; False if that failed."""
        self.log.warning(
            "Instance %s of %s is %s; deleting it", instance.id, self.log_name, instance.task_state or instance.state
        )
        try:
            if not instance.deleting:
                await self.client.destroy_node(instance.id)
        except CloudError as e:
            self.log.error("Could not delete broken instance %s: %s", instance.id, e)
            return False
        return True

    async def delete(self, instance_id: str, name: str, tags: Mapping[str, str], *, wait: bool = True) -> bool:
        """Delete a server's instance (and any duplicate a late create left), then wait until it is gone; True
        if it was seen gone (its ports are then deleted too). ``CloudError`` if the cloud would not delete it
        within ``stop_timeout_seconds``."""
        self.log.info("Deleting instance %s (%s) of %s", name, instance_id, self.log_name)
        try:
            await self.delete_until_deadline(instance_id)
        except CloudError as e:
            self.log.error(
                "Could not delete instance %s (%s) of %s: %s. If the hub forgets it, the reaper"
                " (libcloudspawner-reaper) will find it by its tags.",
                name,
                instance_id,
                self.log_name,
                e,
            )
            raise
        # the same server's other instances (a create that landed after its request timed out): one lookup
        await self.remove_duplicates(name, tags, keep=None)
        if not wait:
            return False
        gone = await self.wait_gone(instance_id)
        if self.ports and gone:
            await self.remove_ports(name, tags.get(naming.TAG_HUB_ID, ""), gone={instance_id})
        return gone

    async def delete_until_deadline(self, instance_id: str) -> None:
        """DELETE (a 404 counts as deleted, and wait_gone checks it). JupyterHub forgets the server whatever
        stop() does, so an outage longer than one call's retry budget must not leave the VM behind: transient
        failures are retried until stop_timeout_seconds."""
        deadline = time.monotonic() + self.stop_timeout_seconds
        while True:
            try:
                await self.client.destroy_node(instance_id)
                return
            except CloudError as e:
                if not e.transient or time.monotonic() + STOP_RETRY_SECONDS >= deadline:
                    raise
                self.log.warning("Deleting instance %s failed (%s); trying again", instance_id, e)
                await asyncio.sleep(STOP_RETRY_SECONDS)

    async def wait_gone(self, instance_id: str) -> bool:
        """Wait (bounded) until the instance is gone, deleting it again if the cloud shows no deletion in
        progress: a DELETE that answered 404 or 5xx while the instance lives must not leave it behind."""
        deadline = time.monotonic() + self.stop_timeout_seconds
        redelete_after = time.monotonic() + REDELETE_AFTER_SECONDS
        while time.monotonic() < deadline:
            try:
                instance: Instance | str | None = await self.client.get_node(instance_id, retries=1)
            except CloudError as e:
                self.log.debug("Checking deleted instance %s: %s", instance_id, e)
                instance = "unknown"
            if instance is None or (isinstance(instance, Instance) and instance.state == "terminated"):
                return True
            if isinstance(instance, Instance) and not instance.deleting and time.monotonic() >= redelete_after:
                self.log.warning(
                    "Instance %s still exists and is not being deleted (state %s); deleting it again",
                    instance_id,
                    instance.state,
                )
                redelete_after = time.monotonic() + REDELETE_AFTER_SECONDS
                try:
                    await self.client.destroy_node(instance_id)
                except CloudError as e:
                    self.log.warning("Deleting instance %s again failed: %s", instance_id, e)
            await asyncio.sleep(min(2.0, self.poll_interval_seconds))
        self.log.warning(
            "Instance %s is still being deleted after %.0fs; leaving it to the cloud"
            " (the reaper, libcloudspawner-reaper, finds it by its tags if it stays)",
            instance_id,
            self.stop_timeout_seconds,
        )
        return False
