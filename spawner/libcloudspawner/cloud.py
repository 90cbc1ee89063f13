"""The only module that talks to the cloud: an async wrapper over a (synchronous) libcloud driver.

- Every call runs in a ``ThreadPoolExecutor``; each worker thread has its own driver (libcloud drivers are
  not thread-safe), all sharing one in-memory Keystone token cache, so the hub authenticates once per
  process rather than once per thread and service.
- Every call has a deadline (``asyncio.wait_for``) on top of the driver's own socket timeout.
- Transient failures (5xx, connection errors and timeouts, 429/413 honouring Retry-After) are retried
  with exponential backoff and jitter; other 4xx are not. A 401 (token expired) is retried once, after
  libcloud dropped the cached token.
- A create is never retried blindly: :meth:`CloudClient.create_node` (and ``create_volume``) reports an
  *unknown* outcome, and the caller looks the instance (volume) up by name and tags first.
- Block storage (home volumes): Cinder v3 for volumes, Nova's ``os-volume_attachments`` to attach and
  detach them, through the OpenStack 2.0 driver (see :func:`cloudcalls.cinder`). The blocking calls are in
  ``cloudcalls`` (Nova, Cinder) and ``ports`` (Neutron ports, for internal TLS); the records in ``cloudtypes``.
- Image, size and network lists are cached (TTL) and shared by all spawners of the process: one client per
  :class:`~libcloudspawner.settings.CloudSettings` (:func:`client_for`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import cloudcalls
from .cloudtypes import (
    CloudAmbiguous,
    CloudConfigError,
    CloudError,
    CloudNotFound,
    CreateOutcomeUnknown,
    Instance,
    Volume,
)
from .cloudtypes import to_instance as _to_instance
from .cloudtypes import to_volume as _to_volume
from .config import CredentialsError
from .drivers import classify, describe, make_driver_factory
from .naming import tags_match
from .settings import CloudSettings

# the client and what it hands back: the rest of the package imports these from here
__all__ = ["CloudAmbiguous", "CloudClient", "CloudConfigError", "CloudError", "CloudNotFound", "CreateOutcomeUnknown",
           "Instance", "Volume", "client_for", "describe", "make_driver_factory", "settle_create"]  # fmt: skip

log = logging.getLogger(__name__)

RETRY_AFTER_MAX_SECONDS = 60.0
_SAFE_NAME = re.compile(r"^[a-z0-9-]{1,63}$")
_RAISE = object()


class CloudClient:
    """Async access to one cloud account. Share one per settings (see :func:`client_for`)."""

    def __init__(
        self,
        driver_factory: Callable[[], Any],
        settings: CloudSettings | None = None,
        *,
        provider: str | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.settings = settings = settings or CloudSettings()
        self.log = log or logging.getLogger(__name__)
        self._factory = driver_factory
        self.timeout_seconds = settings.api_timeout_seconds
        self.retries = settings.api_retries
        self.backoff_base_seconds = settings.api_backoff_base_seconds
        self.backoff_max_seconds = settings.api_backoff_max_seconds
        self.cache_ttl_seconds = settings.api_cache_ttl_seconds
        self.provider = (provider or settings.libcloud_provider).lower()
        self._executor = ThreadPoolExecutor(max_workers=settings.api_max_workers, thread_name_prefix="libcloud")
        self._local = threading.local()
        self._generation = 0  # bumped when credentials must be fetched afresh (see _forget_credentials)
        self._cache: dict[str, tuple[float, list]] = {}
        self._cache_locks: dict[str, asyncio.Lock] = {}
        #: libcloud calls made, by method name (for the benchmark and the tests)
        self.calls: dict[str, int] = {}

    # ------------------------------------------------------------------------------ plumbing
    def _driver(self):
        driver = getattr(self._local, "driver", None)
        if driver is None or getattr(self._local, "generation", None) != self._generation:
            driver = self._local.driver = self._factory()
            self._local.generation = self._generation
        return driver

    def _forget_credentials(self) -> None:
        """After a 401: drop every cached token and rebuild every worker's driver on its next call.

        libcloud evicts a refused token only when the refusal comes from a service call; a token revoked
        early (Keystone restart, password change) and loaded from the shared cache by another worker fails
        inside ``authenticate`` (GET /v3/auth/tokens) and would stay cached until its advertised expiry.
        """
        self._generation += 1
        cache = getattr(self._factory, "shared", {}).get("token_cache")
        if cache is not None:
            cache.clear_all()

    def _run(self, method: str | Callable[[Any], Any], args: tuple, kwargs: dict):
        driver = self._driver()
        try:
            if callable(method):
                return method(driver, *args, **kwargs)
            return getattr(driver, method)(*args, **kwargs)
        except Exception as e:
            if classify(e)[1] is None:
                # No HTTP answer (connection refused or reset, timeout, an error inside libcloud): the driver may
                # be half-way through a login, and libcloud does not recover from that. Its Keystone v3
                # connection takes a token from the shared cache, stores it, then fetches the token's catalog;
                # if that fetch fails it keeps the token without a catalog and every later call on the driver
                # fails ("'NoneType' object has no attribute 'get_endpoint'"). This thread's next call builds
                # a new driver (with a cached token that costs one GET /v3/auth/tokens).
                self._local.driver = None
            raise

    async def _once(self, method: str | Callable[[Any], Any], label: str, *args, **kwargs):
        self.calls[label] = self.calls.get(label, 0) + 1
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._run, method, args, kwargs)
        return await asyncio.wait_for(future, timeout=self.timeout_seconds)

    def backoff_seconds(self, attempt: int, retry_after: float | None = None) -> float:
        """Exponential backoff with "equal jitter"; never less than a server's Retry-After (capped)."""
        cap = min(self.backoff_max_seconds, self.backoff_base_seconds * (2**attempt))
        delay = cap / 2 + random.uniform(0, cap / 2)
        if retry_after:
            delay = max(delay, min(float(retry_after), RETRY_AFTER_MAX_SECONDS))
        return delay

    async def call(
        self,
        method: str | Callable[[Any], Any],
        *args,
        retry: bool = True,
        retries: int | None = None,
        what: str | None = None,
        on_404: Any = _RAISE,
        **kwargs,
    ):
        """Run ``driver.<method>(*args, **kwargs)`` (or ``method(driver, ...)``) off the loop, with a
        timeout, and retries with backoff on transient errors (``retries`` overrides the budget).

        ``on_404``: value to return when the cloud answers 404 (default: raise).
        Raises ``CloudError`` (``transient`` set when the budget ran out on transient failures).
        """
        label = method if isinstance(method, str) else getattr(method, "__name__", "call")
        what = what or label
        budget = self.retries if retries is None else retries
        reauthed = False
        attempt = 0
        while True:
            try:
                return await self._once(method, label, *args, **kwargs)
            except (asyncio.CancelledError, CloudError):
                raise  # a CloudError comes from one of this module's helpers: already explained
            except Exception as e:
                transient, status, retry_after = classify(e)
                if status == 404 and on_404 is not _RAISE:
                    return on_404
                if status == 401 and not reauthed:
                    # libcloud dropped its cached token on the 401: one more try authenticates again
                    reauthed = True
                    self._forget_credentials()
                    self.log.info("Cloud API answered 401 to %s; authenticating again", what)
                    continue
                if status is None and "could not find specified endpoint" in str(e).lower():
                    raise CloudConfigError(
                        f"{what} failed: the cloud's service catalog has no endpoint for this region (check"
                        " LibcloudSpawner.cloud_region, or ex_force_service_region in libcloudparams)"
                    ) from e
                if not transient or not retry or attempt >= budget:
                    raise CloudError(f"{what} failed: {describe(e)}", transient=transient, status=status) from e
                delay = self.backoff_seconds(attempt, retry_after)
                attempt += 1
                self.log.warning(
                    "Cloud API %s failed (%s); retry %d/%d in %.1fs",
                    what, describe(e), attempt, budget, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------------------ cached lookups
    async def _cached_list(self, kind: str, method: str, *, refresh: bool = False) -> list:
        lock = self._cache_locks.setdefault(kind, asyncio.Lock())
        async with lock:
            entry = self._cache.get(kind)
            if entry and not refresh and time.monotonic() - entry[0] < self.cache_ttl_seconds:
                return entry[1]
            items = list(await self.call(method, what=f"list {kind}"))
            self._cache[kind] = (time.monotonic(), items)
            return items

    async def _resolve(self, kind: str, method: str, wanted: str):
        found: list = []
        for refresh in (False, True):
            entry = self._cache.get(kind)
            if refresh and entry and time.monotonic() - entry[0] < 10:
                break  # fetched moments ago: do not hammer the API for a name that is not there
            items = await self._cached_list(kind, method, refresh=refresh)
            found = [i for i in items if str(getattr(i, "id", "")) == wanted]
            found = found or [i for i in items if getattr(i, "name", None) == wanted]
            if len(found) == 1:
                return found[0]
        if found:  # still several after a fresh listing (or moments after one)
            ids = ", ".join(sorted(str(getattr(i, "id", "?")) for i in found))
            raise CloudAmbiguous(
                f"the cloud has {len(found)} {kind} named {wanted!r} ({ids}): configure one by its id", status=409
            )
        raise CloudNotFound(f"the cloud has no {kind[:-1]} {wanted!r}", status=404)

    async def image(self, name_or_id: str):
        return await self._resolve("images", "list_images", name_or_id)

    async def size(self, name_or_id: str):
        return await self._resolve("sizes", "list_sizes", name_or_id)

    async def network(self, name_or_id: str):
        return await self._resolve("networks", "ex_list_networks", name_or_id)

    async def key_pair(self, name: str):
        return await self._resolve("key pairs", "list_key_pairs", name)

    async def security_group(self, name: str):
        return await self._resolve("security groups", "ex_list_security_groups", name)

    # ------------------------------------------------------------------------------ instances
    async def create_node(
        self, request: Mapping[str, Any], *, on_sent: Callable[[Any], None] | None = None
    ) -> Instance:
        """Create an instance from ``request`` (``requests.create_request``). Never retried here: every
        doubtful outcome is for the caller to look up.

        ``on_sent`` receives the in-flight request (a ``concurrent.futures.Future``), so that a cancelled start
        can wait for it (see :func:`settle_create`) before looking for what it created.
        Raises ``CloudError`` when the API refused the request (nothing was created), or
        ``CreateOutcomeUnknown`` when the outcome is unknown (5xx, timeout, connection lost, and a 401:
        libcloud's create is a POST then a GET of the new server, and a token refused on the GET comes
        after Nova created it, so re-sending the POST would make a second instance).
        """
        self.calls["create_node"] = self.calls.get("create_node", 0) + 1
        pending = self._executor.submit(self._run, cloudcalls.create, (), dict(request))
        if on_sent is not None:
            on_sent(pending)
        try:
            node = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(pending)), self.timeout_seconds)
        except asyncio.TimeoutError as e:
            raise CreateOutcomeUnknown(
                f"create instance: no answer within {self.timeout_seconds:.0f}s", transient=True
            ) from e
        except asyncio.CancelledError:
            raise
        except Exception as e:
            transient, status, _ = classify(e)
            if status == 401:
                self._forget_credentials()  # the lookup that follows authenticates afresh
                self.log.info("Cloud API answered 401 during create instance; looking the instance up")
                raise CreateOutcomeUnknown(
                    f"create instance: token refused ({describe(e)})", transient=True, status=status
                ) from e
            if transient or status is None:
                raise CreateOutcomeUnknown(
                    f"create instance failed: {describe(e)}", transient=True, status=status
                ) from e
            raise CloudError(f"create instance failed: {describe(e)}", status=status) from e
        return _to_instance(node)

    async def get_node(self, node_id: str, *, retries: int | None = None) -> Instance | None:
        """The instance, or ``None`` once the cloud says it does not exist (404)."""
        if self.provider == "openstack":
            node = await self.call("ex_get_node_details", node_id, retries=retries, what="get instance")
            return None if node is None else _to_instance(node)
        nodes = await self.call("list_nodes", retries=retries, what="list instances")
        return next((_to_instance(n) for n in nodes if str(n.id) == node_id), None)

    async def list_nodes(self) -> list[Instance]:
        """Every instance of the project (one listing)."""
        return [_to_instance(n) for n in await self.call("list_nodes", what="list instances")]

    async def find_nodes(self, *, name: str | None, tags: Mapping[str, str]) -> list[Instance]:
        """Instances carrying all ``tags`` (and named ``name`` if given)."""
        if self.provider == "openstack" and name and _SAFE_NAME.match(name):
            # Nova filters by name server-side (a regex): no full listing of a big project
            nodes = await self.call(cloudcalls.list_named, name, what="list instances by name")
        else:
            nodes = await self.call("list_nodes", what="list instances")
        found = [_to_instance(n) for n in nodes]
        return [i for i in found if (name is None or i.name == name) and tags_match(i.metadata, tags)]

    async def destroy_node(self, node_id: str) -> None:
        """Delete an instance (retried: deleting is idempotent); an instance already gone is fine."""
        await self.call(cloudcalls.destroy, node_id, what=f"delete instance {node_id}", on_404=None)

    async def update_metadata(self, node_id: str, metadata: Mapping[str, str]) -> None:
        """Merge ``metadata`` into an instance's metadata (retried: setting keys is idempotent)."""
        if self.provider != "openstack":
            raise CloudError(f"updating instance metadata is not implemented for provider {self.provider!r}")
        await self.call(cloudcalls.update_metadata, node_id, metadata, what=f"update metadata of instance {node_id}")

    async def server_action(self, node_id: str, action: str) -> None:
        """Ask Nova to power a server on or off, shelve or unshelve it (202). Not retried: a repeated action
        is refused (409) while the first runs; after an error the caller reads the server's state."""
        if self.provider != "openstack":
            raise CloudError(f"server action {action} is not implemented for provider {self.provider!r}")
        await self.call(cloudcalls.server_action, node_id, action, retry=False, what=f"{action} instance {node_id}")

    async def replace_metadata(self, node_id: str, metadata: Mapping[str, str]) -> None:
        """Set an instance's metadata to exactly ``metadata`` (retried: idempotent)."""
        if self.provider != "openstack":
            raise CloudError(f"replacing instance metadata is not implemented for provider {self.provider!r}")
        await self.call(cloudcalls.replace_metadata, node_id, metadata, what=f"replace metadata of instance {node_id}")

    async def rename_node(self, node_id: str, name: str) -> None:
        """Rename an instance (retried: idempotent)."""
        if self.provider != "openstack":
            raise CloudError(f"renaming an instance is not implemented for provider {self.provider!r}")
        await self.call(cloudcalls.rename, node_id, name, what=f"rename instance {node_id}")

    async def fault_message(self, node_id: str) -> str | None:
        """Nova's ``fault.message`` of an instance in ERROR (one extra call, only on errors)."""
        if self.provider != "openstack":
            return None
        try:
            return await self.call(cloudcalls.fault, node_id, retries=1, what="read instance fault", on_404=None)
        except CloudError as e:
            self.log.debug("Could not read the fault of instance %s: %s", node_id, e)
            return None

    # ------------------------------------------------------------------------------ volumes
    async def create_volume(
        self, name: str, size_gib: int, *, volume_type: str | None = None, metadata: Mapping[str, str]
    ) -> Volume:
        """Create a volume (never retried: Cinder makes one per request). Raises ``CreateOutcomeUnknown``
        when it may exist anyway (5xx, timeout, connection lost): look it up by name and tags first."""
        try:
            vol = await self.call(cloudcalls.create_volume, name, size_gib, volume_type, metadata, retry=False,
                                  what=f"create volume {name}")  # fmt: skip
        except CloudError as e:  # a timeout is transient too
            if e.transient or (e.status is None and not isinstance(e, CloudConfigError)):
                raise CreateOutcomeUnknown(str(e), transient=True, status=e.status) from e
            raise
        return _to_volume(vol)

    async def get_volume(self, volume_id: str) -> Volume | None:
        """The volume, or ``None`` once Cinder says it does not exist (404)."""
        vol = await self.call(cloudcalls.get_volume, volume_id, what=f"get volume {volume_id}", on_404=None)
        return None if vol is None else _to_volume(vol)

    async def find_volumes(self, *, name: str | None, tags: Mapping[str, str]) -> list[Volume]:
        """Volumes carrying all ``tags`` in their metadata (and named ``name`` if given)."""
        found = [_to_volume(v) for v in await self.call(cloudcalls.list_volumes, name, what="list volumes")]
        return [v for v in found if (name is None or v.name == name) and tags_match(v.metadata, tags)]

    async def attach_volume(self, server_id: str, volume_id: str) -> str | None:
        """Ask Nova to attach a volume; the device it reports. Not retried (a second request would be refused
        while the first attaches): after an error the caller reads the volume's status."""
        return await self.call(cloudcalls.attach_volume, server_id, volume_id, retry=False,
                               what=f"attach volume {volume_id} to instance {server_id}")  # fmt: skip

    async def detach_volume(self, server_id: str, volume_id: str) -> bool:
        """Ask Nova to detach a volume; False when it is not attached to that server (404). Not retried:
        after an error the caller reads the volume's status."""
        found = await self.call(cloudcalls.detach_volume, server_id, volume_id, retry=False, on_404=None,
                                what=f"detach volume {volume_id} from instance {server_id}")  # fmt: skip
        return found is not None

    async def update_volume(self, volume_id: str, name: str, metadata: Mapping[str, str]) -> Volume:
        """Rename a volume and set its whole metadata (idempotent: retried)."""
        return _to_volume(
            await self.call(cloudcalls.update_volume, volume_id, name, metadata, what=f"update volume {volume_id}")
        )

    async def delete_volume(self, volume_id: str) -> None:
        """Delete a volume (retried); a volume already gone (404) or already being deleted is fine."""
        try:
            await self.call(cloudcalls.delete_volume, volume_id, what=f"delete volume {volume_id}", on_404=None)
        except CloudError as e:
            if e.status != 400:
                raise
            # refused: attached or busy, or an earlier attempt whose answer was lost is deleting it
            vol = await self.get_volume(volume_id)
            if vol is not None and vol.status != "deleting":
                raise


async def settle_create(pending, timeout: float) -> Instance | None:
    """Wait up to ``timeout`` for an in-flight create request; its instance if it returned one."""
    if pending is None:
        return None
    try:
        node = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(pending)), timeout)
    except asyncio.CancelledError:
        raise
    except Exception:
        return None
    return _to_instance(node)


_clients: dict[str, CloudClient] = {}
_clients_lock = threading.Lock()


def client_for(settings: CloudSettings, log: logging.Logger | None = None) -> CloudClient:
    """The one client (executor, drivers, token and lookup caches) of these settings in this process.

    Raises ``CloudError`` when the settings cannot make a driver (no credentials, an unreadable clouds.yaml).
    """
    key = settings.key()
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            try:
                args = settings.driver_arguments()
            except CredentialsError as e:
                raise CloudError(str(e)) from e
            client = _clients[key] = CloudClient(make_driver_factory(args), settings, provider=args.provider, log=log)
        return client
