"""The blocking OpenStack calls that :class:`cloud.CloudClient` runs in its worker threads, each on the thread's
own libcloud driver: one function per operation libcloud lacks or names otherwise (Nova: create on a port,
search by name, metadata, actions, rename, fault; Cinder v3 and Nova's ``os-volume_attachments``: home
volumes). Nothing here retries, waits or classifies errors: the client does (deadline, backoff, 401, 404).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .cloudtypes import CloudConfigError


def destroy(driver, node_id: str):
    from libcloud.compute.base import Node

    node = Node(id=node_id, name=None, state=None, public_ips=[], private_ips=[], driver=driver)
    return driver.destroy_node(node)


def create(driver, *, security_groups: Iterable[str] = (), port_id: str | None = None, **kwargs):
    """``create_node`` taking security groups by name (no lookup call: Nova takes names); with ``port_id``, on
    that Neutron port (its own groups apply): libcloud's ``create_node`` sends only ``networks: [{"uuid"}]``, so
    its request is built by the driver and sent with ``[{"port": id}]``, then the server read, as it does."""
    if port_id:
        params = driver._create_args_to_params(None, **kwargs)
        params["networks"] = [{"port": port_id}]
        created = driver.connection.request("/servers", method="POST", data={"server": params}).object["server"]
        return driver._to_node(driver.connection.request(f"/servers/{created['id']}").object["server"])
    groups = list(security_groups)
    if groups:
        from libcloud.compute.drivers.openstack import OpenStackSecurityGroup

        kwargs["ex_security_groups"] = [
            OpenStackSecurityGroup(id=None, tenant_id=None, name=g, description=None, driver=driver) for g in groups
        ]
    return driver.create_node(**kwargs)


def list_named(driver, name: str):
    """``GET /servers/detail?name=^<name>$`` (``name`` is a safe slug: no regex metacharacters)."""
    response = driver.connection.request("/servers/detail", params={"name": f"^{name}$"})
    return driver._to_nodes(response.object)


def update_metadata(driver, node_id: str, metadata: Mapping[str, str]):
    """``POST /servers/{id}/metadata``: merge these keys into the instance's metadata (OpenStack)."""
    response = driver.connection.request(
        f"/servers/{node_id}/metadata", method="POST", data={"metadata": dict(metadata)}
    )
    return (response.object or {}).get("metadata") or {}


def server_action(driver, node_id: str, action: str):
    """``POST /servers/{id}/action`` ``{action: null}``: ``os-start``, ``os-stop``, ``shelve``, ``unshelve``."""
    return driver.connection.request(f"/servers/{node_id}/action", method="POST", data={action: None})


def replace_metadata(driver, node_id: str, metadata: Mapping[str, str]):
    """``PUT /servers/{id}/metadata``: the instance's metadata becomes exactly ``metadata`` (OpenStack)."""
    body = {"metadata": dict(metadata)}
    response = driver.connection.request(f"/servers/{node_id}/metadata", method="PUT", data=body)
    return (response.object or {}).get("metadata") or {}


def rename(driver, node_id: str, name: str):
    """``PUT /servers/{id}`` with a new name (OpenStack)."""
    return driver.connection.request(f"/servers/{node_id}", method="PUT", data={"server": {"name": name}})


def fault(driver, node_id: str) -> str | None:
    response = driver.connection.request(f"/servers/{node_id}")
    fault = (response.object or {}).get("server", {}).get("fault") or {}
    return fault.get("message")


def cinder(driver):
    """The driver's Cinder v3 connection. libcloud's OpenStack 2.0 driver looks it up in the catalog by type
    ``volumev3`` and name ``cinderv3``; clouds that name the service ``cinder`` (the dev cloud, recent
    deployments) would make every volume call fail with "Could not find specified endpoint", so it is found
    by type only, as keystoneauth does. The 1.1 driver has no Cinder connection (only Nova's deprecated
    ``os-volumes`` proxy): home volumes need ``openstack_api_version`` 2.0."""
    conn = getattr(driver, "volumev3_connection", None)
    if conn is None:
        raise CloudConfigError(
            "home volumes need libcloud's OpenStack 2.0 driver (openstack_api_version '2.0') and a Cinder v3"
            " (volumev3) endpoint"
        )
    if driver.volume_connection is not conn:
        conn.service_name = None
        driver.volume_connection = conn
    return conn


def create_volume(driver, name: str, size_gib: int, volume_type: str | None, metadata: Mapping[str, str]):
    """``POST /volumes`` with the given metadata (libcloud's ``create_volume`` sets its own ``contents`` key)."""
    volume: dict[str, Any] = {"size": int(size_gib), "name": name, "metadata": dict(metadata)}
    if volume_type:
        volume["volume_type"] = volume_type
    response = cinder(driver).request("/volumes", method="POST", data={"volume": volume})
    return driver._to_volume(response.object)


def get_volume(driver, volume_id: str):
    return driver._to_volume(cinder(driver).request(f"/volumes/{volume_id}").object)


def list_volumes(driver, name: str | None):
    """``GET /volumes/detail`` (every page), filtered by exact name on Cinder's side when given."""
    params = {"name": name} if name else {}
    pages = driver._paginated_request("/volumes/detail", "volumes", cinder(driver), params=params)
    return driver._to_volumes(pages)


def attach_volume(driver, server_id: str, volume_id: str) -> str | None:
    """``POST /servers/{id}/os-volume_attachments``; the device Nova reports."""
    body = {"volumeAttachment": {"volumeId": volume_id}}
    response = driver.connection.request(f"/servers/{server_id}/os-volume_attachments", method="POST", data=body)
    return ((response.object or {}).get("volumeAttachment") or {}).get("device")


def detach_volume(driver, server_id: str, volume_id: str):
    return driver.connection.request(f"/servers/{server_id}/os-volume_attachments/{volume_id}", method="DELETE")


def update_volume(driver, volume_id: str, name: str, metadata: Mapping[str, str]):
    """``PUT /volumes/{id}``: a new name, and ``metadata`` as the volume's whole metadata (Cinder replaces it)."""
    body = {"volume": {"name": name, "metadata": dict(metadata)}}
    return driver._to_volume(cinder(driver).request(f"/volumes/{volume_id}", method="PUT", data=body).object)


def delete_volume(driver, volume_id: str):
    return cinder(driver).request(f"/volumes/{volume_id}", method="DELETE")
