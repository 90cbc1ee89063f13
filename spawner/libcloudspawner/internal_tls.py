"""JupyterHub's ``internal_ssl`` for servers in VMs: each server gets its own key and a certificate that names
its VM's address, and the hub and the proxy reach it over ``https://``.

JupyterHub calls ``create_certs()`` (its own: key and certificate signed by its ``notebooks-ca``, in
``internal_certs_location``) and then ``move_certs(paths)`` before ``start()``, and passes the paths
``move_certs`` returns to the server as ``JUPYTERHUB_SSL_KEYFILE``/``CERTFILE``/``CLIENT_CA``. The VM's address
is not known then, so:

- :func:`move_certs` returns the paths on the VM (``userdata.TLS_PATHS``);
- a cold boot (:func:`cold_boot`) creates the VM's Neutron port first, on the configured network with the
  configured security groups (:mod:`ports`), learns its fixed address, issues the certificate again for it
  (:func:`issue`: JupyterHub's ``Spawner.create_certs`` with that address, overwriting the same files), and
  puts key, certificate and CA into the user-data (key ``0600``, given to the server's account by its unit);
  the server is then created on that port, and the port deleted after the server (Nova keeps ports it did not
  create);
- a warm-pool claim (``pool.start_from_pool``) knows the pool VM's address: the certificate is issued for it
  and key, certificate and CA go over the pool agent's mutual-TLS hand-over.

A VM kept by ``stop_action`` keeps its key and certificate when it is resumed (same port, same address, same
CA). The server's key is removed from the hub's disk once it was read for the VM, and the one JupyterHub makes
before every start at once. A certificate names the VM's
addresses, ``DNS:localhost`` and ``IP:127.0.0.1`` (JupyterHub's ``ssl_alt_names_include_local``) and the
configured ``ssl_alt_names`` except the hub's own names (``trusted_alt_names``, JupyterHub's default for
``ssl_alt_names``): a user, who can read the key, never holds a certificate valid for the hub's address.
Nothing here logs a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from jupyterhub.spawner import Spawner

from . import errors, ports, userdata
from .cloud import CloudError, CreateOutcomeUnknown


@dataclass(frozen=True)
class ServerTls:
    """A server's key, certificate and CA bundle (PEM): what its VM receives."""

    key: str
    cert: str
    ca: str

    def __repr__(self) -> str:  # never print a key
        return "ServerTls(...)"

    def userdata_files(self) -> list[dict[str, str]]:
        """The ``tls_files`` of ``userdata.render_userdata``: the key ``0600`` (given to the account)."""
        paths = userdata.TLS_PATHS
        return [
            {"path": paths["keyfile"], "permissions": "0600", "content": self.key, "owner": "user"},
            {"path": paths["certfile"], "permissions": "0644", "content": self.cert},
            {"path": paths["cafile"], "permissions": "0644", "content": self.ca},
        ]

    def claim(self) -> dict[str, str]:
        """The ``tls`` of ``handoff.claim_body``."""
        return {"key": self.key, "cert": self.cert, "ca": self.ca}


def scheme(spawner: Any) -> str:
    return "https" if getattr(spawner, "internal_ssl", False) else "http"


def move_certs(spawner: Any, paths: dict[str, str]) -> dict[str, str]:
    """JupyterHub's ``move_certs``: the paths the server reads on its VM (the files go with the user-data or
    the hand-over, once the VM's address is known). The key JupyterHub just made is removed: a fresh or pooled
    VM gets a key issued for its address (:func:`issue`), a resumed VM keeps the one it has."""
    with contextlib.suppress(OSError, KeyError, TypeError):
        os.unlink(paths["keyfile"])
    return dict(userdata.TLS_PATHS)


def ip_name(address: str) -> str:
    return f"IP:{ipaddress.ip_address(address)}"


def alt_names(addresses: Iterable[str], configured: Sequence[str], hub_names: Sequence[str]) -> list[str]:
    """The certificate's alternative names: ``IP:`` each VM address, then the configured ``ssl_alt_names``
    that are not the hub's own (``trusted_alt_names``), without repeats (JupyterHub adds the local names)."""
    names = [ip_name(a) for a in addresses]
    hub = set(hub_names)
    for name in configured:
        if name not in hub and name not in names:
            names.append(name)
    return names


async def _configured_alt_names(spawner: Any) -> list[str]:
    configured = spawner.ssl_alt_names
    if callable(configured):
        configured = configured(spawner)
        if asyncio.iscoroutine(configured) or isinstance(configured, asyncio.Future):
            configured = await configured
    return list(configured or ())


def _read_and_forget(paths: dict[str, str]) -> ServerTls:
    with open(paths["keyfile"], encoding="utf-8") as f:
        key = f.read()
    with open(paths["certfile"], encoding="utf-8") as f:
        cert = f.read()
    with open(paths["cafile"], encoding="utf-8") as f:
        ca = f.read()
    with contextlib.suppress(OSError):  # the key lives on the VM only
        os.unlink(paths["keyfile"])
    return ServerTls(key=key, cert=cert, ca=ca)


async def issue(spawner: Any, addresses: Sequence[str]) -> ServerTls:
    """Issue the server's certificate for ``addresses`` with JupyterHub's own ``Spawner.create_certs`` (same
    CA, same files, overwritten) and read it for the VM; the key file is then removed from the hub."""
    try:
        names = alt_names(addresses, await _configured_alt_names(spawner), list(spawner.trusted_alt_names))
        saved = spawner.ssl_alt_names
        spawner.ssl_alt_names = names
        try:
            paths = await Spawner.create_certs(spawner)
        finally:
            spawner.ssl_alt_names = saved
        return await asyncio.to_thread(_read_and_forget, paths)
    except Exception as e:  # certipy, the filesystem, a bad alt name: the detail goes to the log only
        raise errors.configuration(
            "Your server's TLS certificate could not be made",
            f"internal_ssl: cannot issue the certificate of {spawner._log_name} for {list(addresses)}:"
            f" {type(e).__name__}: {e}",
            reason="internal-tls",
        ) from None


def client_context(spawner: Any) -> ssl.SSLContext | None:
    """How the hub itself talks to servers (its internal_ssl client certificate, its CA bundle), for the
    readiness check; None without internal_ssl."""
    if not getattr(spawner, "internal_ssl", False):
        return None
    from jupyterhub.utils import make_ssl_context

    settings = getattr(spawner.user, "settings", None) or {}
    return make_ssl_context(
        settings.get("internal_ssl_key"), settings.get("internal_ssl_cert"), cafile=settings.get("internal_ssl_ca")
    )


def _refuse_unsupported(spawner: Any, client: Any) -> None:
    problem = None
    if client.provider != "openstack":
        problem = f"internal_ssl needs the OpenStack provider (Neutron ports), not {client.provider!r}"
    elif not spawner.userserver_net:
        problem = "internal_ssl needs userserver_net: the VM's port is created on that network before the VM"
    if problem:
        raise errors.configuration("This hub's TLS settings do not fit its cloud", f"LibcloudSpawner: {problem}")


async def cold_boot(spawner: Any, provisioner: Any, attempt: Any) -> tuple[ports.Port, str]:
    """Before a fresh VM is created: its port (this attempt's name, this hub's description), the certificate
    for the port's addresses, the user-data carrying them. Returns the port and the user-data. A failure leaves
    nothing behind that the start's cleanup does not delete (``attempt.port_sent``)."""
    client = provisioner.client
    _refuse_unsupported(spawner, client)
    try:
        network = await client.network(spawner.userserver_net)
        groups = [await client.security_group(g) for g in spawner.security_groups]
        await provisioner.remove_ports(attempt.name, spawner.hub_id)  # unbound leftovers of an interrupted start
        provisioner.emit(15, "Creating the virtual machine's network port")
        attempt.port_sent = True
        port = await ports.create_port(client, name=attempt.name, network_id=str(network.id),
                                       group_ids=[str(g.id) for g in groups], hub_id=spawner.hub_id)  # fmt: skip
    except CreateOutcomeUnknown as e:
        raise errors.cloud_unavailable(
            "The cloud is not answering right now; please try again in a few minutes.",
            f"Creating the port of {spawner._log_name}: {e}",
        ) from None
    except CloudError as e:
        raise errors.for_user(e, spawner._log_name) from None
    if not port.addresses:
        raise errors.cloud_unavailable(
            "The cloud gave your server's network port no address; please tell the administrator.",
            f"Port {port.id} of {spawner._log_name} on {spawner.userserver_net} has no fixed address",
        )
    tls = await issue(spawner, port.addresses)
    spawner.log.info("Port %s (%s) of %s; certificate issued for it", port.id, ", ".join(port.addresses),
                     spawner._log_name)  # fmt: skip
    return port, spawner._render_userdata(tls_files=tls.userdata_files())
