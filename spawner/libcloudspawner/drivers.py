"""Building libcloud drivers: one per worker thread of :class:`~libcloudspawner.cloud.CloudClient`, all
sharing one in-memory Keystone token cache, and the process-wide CA bundle. Nothing here calls the cloud."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .config import DriverArguments


class _TokenCache:
    """libcloud ``OpenStackAuthenticationCache``, in memory and thread-safe, shared by all drivers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[Any, Any] = {}

    def get(self, key):
        with self._lock:
            return self._data.get(key)

    def put(self, key, context):
        with self._lock:
            self._data[key] = context

    def clear(self, key):
        with self._lock:
            self._data.pop(key, None)

    def clear_all(self) -> None:
        with self._lock:
            self._data.clear()


def make_driver_factory(args: DriverArguments) -> Callable[[], Any]:
    """A function building a new libcloud driver from ``args`` (called once per worker thread).

    libcloud's driver modules are imported by the first call, in a worker thread: importing the OpenStack
    driver takes most of a second, which must not be spent on the hub's event loop.
    """
    lock = threading.Lock()
    shared: dict[str, Any] = {}

    def prepare() -> None:
        from libcloud.compute.providers import get_driver

        from .cloud import CloudConfigError  # cloud.py imports this module: its errors are imported late

        use_ca_bundle(args.ca_bundle)
        try:
            shared["cls"] = get_driver(args.provider)
        except AttributeError as e:
            raise CloudConfigError(
                f"libcloud has no compute provider {args.provider!r} (libcloud_provider): use a name of"
                " libcloud.compute.types.Provider, e.g. 'openstack'"
            ) from e
        if args.provider.lower() == "openstack" and "ex_auth_cache" not in args.kwargs:
            from libcloud.common.openstack_identity import OpenStackAuthenticationCache

            shared["token_cache"] = type("SharedTokenCache", (_TokenCache, OpenStackAuthenticationCache), {})()

    def factory():
        with lock:
            if "cls" not in shared:
                prepare()
        kwargs = dict(args.kwargs)
        if "token_cache" in shared:
            kwargs["ex_auth_cache"] = shared["token_cache"]
        positional = [a for a in (args.key, args.secret) if a is not None]
        return shared["cls"](*positional, **kwargs)

    factory.shared = shared  # type: ignore[attr-defined]
    return factory


_ca_bundle_lock = threading.Lock()
_ca_bundle_in_use: list[str] = []


def use_ca_bundle(path: str | None) -> None:
    """The one place that sets libcloud's CA bundle. libcloud reads it from a process-wide module setting
    (``libcloud.security.CA_CERTS_PATH``) for every connection, so one hub process can verify its cloud with one
    bundle only: a second, different bundle is refused rather than silently replacing the first.
    Verification stays on either way."""
    if not path:
        return
    import libcloud.security

    from .cloud import CloudError  # cloud.py imports this module: its errors are imported late

    with _ca_bundle_lock:
        if _ca_bundle_in_use and _ca_bundle_in_use[0] != path:
            raise CloudError(
                f"ca_bundle {path!r}: this process already verifies its cloud with {_ca_bundle_in_use[0]!r};"
                " libcloud holds one CA bundle per process"
            )
        libcloud.security.VERIFY_SSL_CERT = True
        libcloud.security.CA_CERTS_PATH = path
        _ca_bundle_in_use[:] = [path]
