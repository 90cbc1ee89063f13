"""Neutron v2.0: networks, security groups and ports (the ports' state: ``ports.py``)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from .base import BaseHandler
from .ports import CREATE_KEYS, FILTERS, PortRecord, new_port


class NeutronHandler(BaseHandler):
    service = "network"

    def neutron_error(self, status: int, kind: str, message: str) -> None:
        """``{"NeutronError": {"type", "message", "detail": ""}}`` (recorded: ports/023-026)."""
        self.set_status(status)
        self.service_headers()
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"NeutronError": {"type": kind, "message": message, "detail": ""}}))


class NeutronPortsHandler(NeutronHandler):
    route = "/v2.0/ports"

    def live_port(self, port_id: str) -> PortRecord | None:
        port = self.double.ports.get(port_id)
        if port is None or port.gone:
            self.neutron_error(404, "PortNotFound", f"Port {port_id} could not be found.")
            return None
        return port

    async def get(self, port_id: str | None = None) -> None:
        if port_id is not None:
            port = self.live_port(port_id)
            if port is not None:
                self.send_json(200, {"port": port.view()})
            return
        filters = {k: self.get_query_argument(k) for k in FILTERS if self.get_query_argument(k, None) is not None}
        _, project = self.token_identity()
        ports = [p for p in self.double.ports.values() if not p.gone and p.tenant_id == project and p.matches(filters)]
        self.send_json(200, {"ports": [p.view() for p in sorted(ports, key=lambda p: p.created)]})

    async def post(self, port_id: str | None = None) -> None:
        if port_id is not None:
            self.neutron_error(405, "HTTPMethodNotAllowed", "The method POST is not allowed for this resource.")
            return
        _, project = self.token_identity()
        result = new_port(self.json_body(), self.double, project)
        if isinstance(result, tuple):
            self.neutron_error(*result)
            return
        self.double.ports[result.id] = result
        self.send_json(201, {"port": result.view(CREATE_KEYS)})

    async def delete(self, port_id: str | None = None) -> None:
        port = self.live_port(port_id or "")
        if port is None:
            return
        port.gone = True  # a bound port goes too (its server keeps running without it, as with Neutron)
        self.set_status(204)
        self.service_headers()
        self.finish()


class NeutronNetworksHandler(NeutronHandler):
    route = "/v2.0/networks"

    def network_view(self, n: dict[str, Any]) -> dict[str, Any]:
        tenant = n.get("tenant_id", "03a8c754e2e3470c933adc5bb5e102b4")
        return {
            "id": n["id"],
            "name": n["name"],
            "tenant_id": tenant,
            "admin_state_up": True,
            "mtu": n.get("mtu", 1500),
            "status": n.get("status", "ACTIVE"),
            "subnets": list(n.get("subnets", [])),
            "shared": n.get("shared", True),
            "availability_zone_hints": [],
            "availability_zones": ["nova"],
            "ipv4_address_scope": None,
            "ipv6_address_scope": None,
            "router:external": False,
            "description": n.get("description", ""),
            "port_security_enabled": True,
            "tags": [],
            "created_at": n.get("created_at", "2026-11-25T20:18:34Z"),
            "updated_at": n.get("updated_at", "2026-11-25T20:18:35Z"),
            "revision_number": 2,
            "project_id": tenant,
        }

    async def get(self, network_id: str | None = None) -> None:
        self.send_catalogue_part(
            "networks", "network", network_id, self.network_view, f"Network {network_id} could not be found."
        )


def _rule(group_id: str, index: int, rule: dict, project: str) -> dict:
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"osdouble/sg-rule/{group_id}/{index}")),
        "security_group_id": group_id,
        "tenant_id": project,
        "project_id": project,
        "description": "",
        "normalized_cidr": rule.get("remote_ip_prefix"),
        "remote_address_group_id": None,
        "tags": [],
        "created_at": "2026-11-25T20:18:34Z",
        "updated_at": "2026-11-25T20:18:34Z",
        "revision_number": 0,
        **rule,
    }


class NeutronSecurityGroupsHandler(NeutronHandler):
    route = "/v2.0/security-groups"

    async def get(self) -> None:
        _, project = self.token_identity()
        groups = [
            {
                "id": g["id"],
                "name": g["name"],
                "description": g.get("description", ""),
                "tenant_id": project,
                "project_id": project,
                "security_group_rules": [_rule(g["id"], i, r, project) for i, r in enumerate(g.get("rules", ()))],
                "tags": [],
                "stateful": True,
                "created_at": "2026-11-25T20:18:34Z",
                "updated_at": "2026-11-25T20:18:34Z",
                "revision_number": 1,
            }
            for g in self.double.catalogue["security_groups"]
        ]
        self.send_json(200, {"security_groups": groups})


ROUTES = [
    (r"/v2\.0/networks", NeutronNetworksHandler),
    (
        r"/v2\.0/networks/([^/]+)",
        type("NeutronNetworkHandler", (NeutronNetworksHandler,), {"route": "/v2.0/networks/{id}"}),
    ),
    (r"/v2\.0/security-groups", NeutronSecurityGroupsHandler),
    (r"/v2\.0/ports", NeutronPortsHandler),
    (r"/v2\.0/ports/([^/]+)", type("NeutronPortHandler", (NeutronPortsHandler,), {"route": "/v2.0/ports/{id}"})),
]
