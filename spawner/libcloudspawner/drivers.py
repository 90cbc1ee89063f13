"""Building libcloud drivers (one per worker thread of :class:`~libcloudspawner.cloud.CloudClient`, all
sharing one in-memory Keystone token cache; the process-wide CA bundle) and reading the exceptions their
calls raise (:func:`classify`, :func:`describe`). Nothing here calls the cloud."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import Any

from .cloudtypes import CloudConfigError, CloudError
from .config import DriverArguments


def classify(exc: BaseException) -> tuple[bool, int | None, float | None]:
    """(transient?, HTTP status, Retry-After seconds) of an exception raised by a libcloud call."""
    status = getattr(exc, "code", None)
    if not isinstance(status, int):
        status = getattr(exc, "http_code", None)
    retry_after = getattr(exc, "retry_after", None)
    headers = getattr(exc, "headers", None) or {}
    if retry_after is None and isinstance(headers, Mapping) and "retry-after" in headers:
        try:
            retry_after = float(headers["retry-after"])
        except (TypeError, ValueError):
            retry_after = None
    if isinstance(status, int):
        if status >= 500 or status == 429 or (status == 413 and retry_after is not None):
            return True, status, retry_after
        return False, status, retry_after
    if isinstance(exc, ssl.SSLError):  # certificate problems do not heal by retrying
        return False, None, None
    if isinstance(exc, asyncio.TimeoutError | TimeoutError | ConnectionError | OSError):
        return True, None, None
    try:
        import requests

        if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            if isinstance(exc, requests.exceptions.SSLError):
                return False, None, None
            return True, None, None
    except ImportError:  # pragma: no cover - libcloud depends on requests
        pass
    return False, None, None


def describe(exc: BaseException) -> str:
    """A one-line description of a cloud error for logs and messages (libcloud messages hold no secret)."""
    text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


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

    with _ca_bundle_lock:
        if _ca_bundle_in_use and _ca_bundle_in_use[0] != path:
            raise CloudError(
                f"ca_bundle {path!r}: this process already verifies its cloud with {_ca_bundle_in_use[0]!r};"
                " libcloud holds one CA bundle per process"
            )
        libcloud.security.VERIFY_SSL_CERT = True
        libcloud.security.CA_CERTS_PATH = path
        _ca_bundle_in_use[:] = [path]
