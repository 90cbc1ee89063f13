"""Neutron ports of the double (state, independent of HTTP; the API is in ``neutron.py``).

As recorded in ``recordings/ports/``: a port created on a network gets its fixed address at once (``DOWN``,
unbound); a server created on it (``networks: [{"port": id}]``) takes that address and MAC and shows the
port's security groups; the port is then bound (``ACTIVE``, ``device_id`` the server, ``device_owner
compute:nova``). Nova did not create it, so deleting the server keeps the port: unbound and ``DOWN`` again,
with its address, until it is deleted.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

#: what Neutron's port views show, in the recorded key order: the create answer, then GET and list
CREATE_KEYS = ("id", "name", "network_id", "tenant_id", "mac_address", "admin_state_up", "status", "device_id",
               "device_owner", "fixed_ips", "project_id", "port_security_enabled", "security_groups",
               "binding:vnic_type", "allowed_address_pairs", "extra_dhcp_opts", "description", "tags",
               "created_at", "updated_at", "revision_number")  # fmt: skip
VIEW_KEYS = ("id", "name", "network_id", "tenant_id", "mac_address", "admin_state_up", "status", "device_id",
             "device_owner", "fixed_ips", "allowed_address_pairs", "extra_dhcp_opts", "security_groups",
             "description", "binding:vnic_type", "port_security_enabled", "tags", "created_at", "updated_at",
             "revision_number", "project_id")  # fmt: skip
#: the list filters the double honours (exact match, as Neutron's)
FILTERS = ("id", "name", "description", "network_id", "device_id", "device_owner", "status")


@dataclass
class PortRecord:
    id: str
    name: str
    description: str
    network: dict[str, Any]
    security_groups: list[str]  # ids
    address: str
    tenant_id: str
    created: float
    mac: str = field(default_factory=lambda: "fa:16:3e:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3)))
    updated: float = 0.0
    device_id: str = ""
    revision: int = 1
    active: bool = False  # its server runs
    gone: bool = False

    def bind(self, server_id: str) -> None:
        self.device_id, self.revision, self.updated = server_id, self.revision + 2, time.time()

    def set_active(self, active: bool) -> None:
        if self.active != active:
            self.active, self.revision, self.updated = active, self.revision + 2, time.time()

    def unbind(self) -> None:
        """Its server is gone: Nova did not create the port, so it stays, unbound."""
        if self.device_id:
            self.device_id, self.active = "", False
            self.revision, self.updated = self.revision + 2, time.time()

    def view(self, keys: tuple[str, ...] = VIEW_KEYS) -> dict[str, Any]:
        subnet = (self.network.get("subnets") or [str(uuid.uuid5(uuid.NAMESPACE_URL, "osdouble/subnet"))])[0]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created))
        values = {
            "id": self.id, "name": self.name, "network_id": self.network["id"], "tenant_id": self.tenant_id,
            "mac_address": self.mac, "admin_state_up": True, "status": "ACTIVE" if self.active else "DOWN",
            "device_id": self.device_id, "device_owner": "compute:nova" if self.device_id else "",
            "fixed_ips": [{"subnet_id": subnet, "ip_address": self.address}], "project_id": self.tenant_id,
            "port_security_enabled": True, "security_groups": list(self.security_groups),
            "binding:vnic_type": "normal", "allowed_address_pairs": [], "extra_dhcp_opts": [],
            "description": self.description, "tags": [], "created_at": stamp,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.updated or self.created)),
            "revision_number": self.revision,
        }  # fmt: skip
        return {k: values[k] for k in keys}

    def matches(self, filters: dict[str, str]) -> bool:
        view = self.view()
        return all(str(view.get(k)) == v for k, v in filters.items())


def new_port(body: Any, double: Any, project: str) -> PortRecord | tuple[int, str, str]:
    """Validate ``POST /v2.0/ports`` like Neutron; the record, or (status, NeutronError type, message)."""
    port = body.get("port") if isinstance(body, dict) else None
    if not isinstance(port, dict) or not isinstance(port.get("network_id"), str):
        return 400, "HTTPBadRequest", "Failed to parse request. Required attribute 'network_id' not specified"
    network = double.find("networks", port["network_id"])
    if network is None:
        return 404, "NetworkNotFound", f"Network {port['network_id']} could not be found."
    groups = port.get("security_groups")
    if groups is None:
        groups = [g["id"] for g in double.catalogue["security_groups"] if g["name"] == "default"][:1]
    for group in groups:
        if not any(g["id"] == group for g in double.catalogue["security_groups"]):
            return 404, "SecurityGroupNotFound", f"Security group {group} does not exist"
    for key in ("name", "description"):
        if not isinstance(port.get(key, ""), str) or len(port.get(key, "")) > 255:
            return 400, "HTTPBadRequest", f"Invalid input for {key}. Reason: '{port.get(key)}' is not a valid string."
    return PortRecord(id=str(uuid.uuid4()), name=port.get("name", ""), description=port.get("description", ""),
                      network=network, security_groups=list(groups), address=double.allocate_address(None),
                      tenant_id=project, created=time.time())  # fmt: skip
