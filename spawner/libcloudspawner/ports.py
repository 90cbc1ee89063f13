"""Neutron ports created before their server (``internal_ssl``: the server's certificate must name the VM's
address before the VM boots). The calls run through :meth:`cloud.CloudClient.call` (its executor, deadline,
retries and error classification) on libcloud's ``OpenStack_2_NodeDriver``.

libcloud 3.9's ``ex_create_port(network, description, admin_state_up, name)`` cannot set security groups: the
port would exist with the project's ``default`` group until an ``ex_update_port`` set them (the group the
"Network posture" forbids, and a second call that can fail after the first). So the port is created with one
``POST /v2.0/ports`` on the driver's own Neutron connection, name, description, network and security group ids
together, and read back with the driver's own ``_to_port``. ``ex_delete_port`` and ``_to_port`` are used as
libcloud has them.

A port is recognisable without a tag call: its name is the instance's name and its description carries the
hub's id (:func:`description`), both set in the create request itself, and Neutron filters on both server-side.
Nova does not delete a port it did not create: the spawner deletes it once the server is gone.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .cloud import CloudClient, CloudConfigError, CloudError, CreateOutcomeUnknown
from .naming import TAG_HUB_ID, TAG_MANAGED_BY

MANAGED_BY = "libcloudspawner"


def description(hub_id: str) -> str:
    """The description of every port of this hub (Neutron matches it exactly)."""
    return f"{TAG_MANAGED_BY}={MANAGED_BY} {TAG_HUB_ID}={hub_id}"


@dataclass(frozen=True)
class Port:
    id: str
    name: str
    description: str
    addresses: tuple[str, ...]
    device_id: str = ""
    created: str | None = None

    @property
    def bound(self) -> bool:
        return bool(self.device_id)


def _to_port(port: Any) -> Port:
    extra = port.extra or {}
    fixed = [ip.get("ip_address") for ip in extra.get("fixed_ips") or () if ip.get("ip_address")]
    return Port(id=str(port.id), name=extra.get("name") or "", description=extra.get("description") or "",
                addresses=tuple(fixed), device_id=extra.get("device_id") or "", created=port.created)  # fmt: skip


def _neutron(driver):
    conn = getattr(driver, "network_connection", None)
    if conn is None:
        raise CloudConfigError("internal_ssl needs libcloud's OpenStack 2.0 driver (openstack_api_version '2.0')")
    return conn


def _create(driver, name: str, network_id: str, group_ids: Sequence[str], text: str):
    port: dict[str, Any] = {"name": name, "description": text, "network_id": network_id, "admin_state_up": True}
    body = {"port": port}
    if group_ids:  # none configured: Neutron gives the project's default group, as Nova does (an empty list: none)
        port["security_groups"] = list(group_ids)
    return driver._to_port(_neutron(driver).request("/v2.0/ports", method="POST", data=body).object["port"])


def _list(driver, params: Mapping[str, str]):
    ports = _neutron(driver).request("/v2.0/ports", params=dict(params)).object.get("ports") or []
    return [driver._to_port(p) for p in ports]


def _delete(driver, port_id: str):
    from libcloud.compute.drivers.openstack import OpenStack_2_PortInterface

    _neutron(driver)
    port = OpenStack_2_PortInterface(id=port_id, state=None, driver=driver, created=None)
    return driver.ex_delete_port(port)


async def create_port(client: CloudClient, *, name: str, network_id: str, group_ids: Sequence[str],
                      hub_id: str) -> Port:  # fmt: skip
    """Create the port (never retried: Neutron makes one per request). ``CreateOutcomeUnknown`` when it may exist
    anyway (5xx, timeout, connection lost): look it up by name and description."""
    try:
        port = await client.call(_create, name, network_id, list(group_ids), description(hub_id), retry=False,
                                 what=f"create port {name}")  # fmt: skip
    except CloudError as e:
        if e.transient or (e.status is None and not isinstance(e, CloudConfigError)):
            raise CreateOutcomeUnknown(str(e), transient=True, status=e.status) from e
        raise
    return _to_port(port)


async def find_ports(client: CloudClient, *, hub_id: str, name: str | None = None) -> list[Port]:
    """This hub's ports (named ``name`` if given): one filtered list request."""
    params = {"description": description(hub_id)}
    if name:
        params["name"] = name
    found = await client.call(_list, params, what="list ports")
    return [p for p in (_to_port(x) for x in found) if p.description == params["description"]]


async def delete_port(client: CloudClient, port_id: str) -> None:
    """Delete a port (retried: idempotent); a port already gone (404) is fine."""
    await client.call(_delete, port_id, what=f"delete port {port_id}", on_404=None)


async def delete_unbound(client: CloudClient, log: Any, *, hub_id: str, name: str, owner: str,
                         gone: Collection[str] = ()) -> None:  # fmt: skip
    """Delete this hub's ports named ``name`` that no server uses (or whose server, in ``gone``, was deleted):
    Nova keeps the ports it did not create. Best effort, logged as ``owner``'s: the reaper finds what is left."""
    try:
        for port in await find_ports(client, hub_id=hub_id, name=name):
            if port.bound and port.device_id not in gone:
                continue
            log.info("Deleting port %s (%s) of %s", port.name, port.id, owner)
            await delete_port(client, port.id)
    except CloudError as e:
        log.error("Could not delete the port of %s (%s); the reaper will find it", owner, e)
