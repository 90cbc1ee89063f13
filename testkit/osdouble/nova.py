"""Nova v2.1: servers (create, list, show, delete, metadata), volume attachments, flavors, images,
networks, security groups, keypairs."""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from .base import BaseHandler, NotFoundMixin
from .records import ServerRecord, iso_micro, iso_z
from .serveractions import PHASE_STATUS, PHASE_VM_STATE, SERVER_ACTIONS
from .volumestate import VolumeRecord


class NovaHandler(BaseHandler):
    service = "compute"

    def service_headers(self) -> None:
        self.set_header("OpenStack-API-Version", "compute 2.1")
        self.set_header("X-OpenStack-Nova-API-Version", "2.1")
        self.set_header("Vary", "OpenStack-API-Version, X-OpenStack-Nova-API-Version")
        self.set_header("x-openstack-request-id", self.req_id)
        self.set_header("x-compute-request-id", self.req_id)

    def nova_error(self, status: int, message: str) -> None:
        self.send_error_body(status, message)

    def links(self, kind: str, ident: str) -> list[dict[str, str]]:
        return [
            {"rel": "self", "href": f"{self.base_url}/v2.1/{kind}/{ident}"},
            {"rel": "bookmark", "href": f"{self.base_url}/{kind}/{ident}"},
        ]

    def server_view(self, s: ServerRecord, in_list: bool = False) -> dict[str, Any]:
        on_host = s.phase in ("spawning", "active", "shutoff")
        status = PHASE_STATUS[s.phase]
        task_state = {"scheduling": "scheduling", "spawning": "spawning"}.get(s.phase, s.task_state)
        if s.deleting:
            task_state = "deleting"
        addresses: dict[str, Any] = {}
        if s.phase in ("active", "shutoff", "shelved_offloaded") and s.address:
            for i, net in enumerate(s.networks):
                if i == 0:
                    addresses[net["name"]] = [
                        {"version": 4, "addr": s.address, "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": s.mac}
                    ]
        view: dict[str, Any] = {
            "id": s.id,
            "name": s.name,
            "status": status,
            "tenant_id": s.tenant_id,
            "user_id": s.user_id,
            "metadata": dict(s.metadata),
            "hostId": hashlib.sha224((s.tenant_id + "osdouble-compute").encode()).hexdigest() if on_host else "",
            "image": {"id": s.image_id, "links": [{"rel": "bookmark", "href": f"{self.base_url}/images/{s.image_id}"}]},
            "flavor": {
                "id": s.flavor["id"],
                "links": [{"rel": "bookmark", "href": f"{self.base_url}/flavors/{s.flavor['id']}"}],
            },
            "created": iso_z(s.created),
            "updated": iso_z(s.updated),
            "addresses": addresses,
            "accessIPv4": "",
            "accessIPv6": "",
            "links": self.links("servers", s.id),
            "OS-DCF:diskConfig": "MANUAL",
        }
        if s.phase != "error":
            view["progress"] = 0
        elif s.fault is not None and (not in_list or s.fault_in_list):
            view["fault"] = dict(s.fault)
        view.update(
            {
                "OS-EXT-AZ:availability_zone": "nova" if on_host else "",
                "config_drive": s.config_drive,
                "key_name": s.key_name,
                "OS-SRV-USG:launched_at": iso_micro(s.launched) if s.launched else None,
                "OS-SRV-USG:terminated_at": None,
            }
        )
        if on_host:
            view["security_groups"] = [{"name": n} for n in s.security_groups]
        view.update(
            {
                "OS-EXT-STS:task_state": task_state,
                "OS-EXT-STS:vm_state": PHASE_VM_STATE[s.phase],
                "OS-EXT-STS:power_state": {"active": 1, "shutoff": 4, "shelved_offloaded": 4}.get(s.phase, 0),
                "os-extended-volumes:volumes_attached": [{"id": v.id} for v in self.double.attached_volumes(s.id)],
            }
        )
        return view

    def get_server(self, server_id: str) -> ServerRecord | None:
        return self.live_record(self.double.servers, server_id, f"Instance {server_id} could not be found.")


class FlavorsHandler(NovaHandler):
    route = "/v2.1/flavors/detail"

    def flavor_view(self, f: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f["id"],
            "name": f["name"],
            "ram": f["ram"],
            "disk": f["disk"],
            "swap": f.get("swap", ""),
            "OS-FLV-EXT-DATA:ephemeral": f.get("ephemeral", 0),
            "OS-FLV-DISABLED:disabled": f.get("disabled", False),
            "vcpus": f["vcpus"],
            "os-flavor-access:is_public": f.get("is_public", True),
            "rxtx_factor": f.get("rxtx_factor", 1.0),
            "links": self.links("flavors", f["id"]),
        }

    async def get(self, flavor_id: str | None = None) -> None:
        ident = None if flavor_id == "detail" else flavor_id
        self.send_catalogue_part(
            "flavors", "flavor", ident, self.flavor_view, f"Flavor {flavor_id} could not be found."
        )


class NovaImagesHandler(NovaHandler):
    route = "/v2.1/images/detail"

    def image_view(self, img: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": img["id"],
            "name": img["name"],
            "minRam": img.get("min_ram", 0),
            "minDisk": img.get("min_disk", 0),
            "metadata": dict(img.get("properties", {})),
            "created": img["created_at"],
            "updated": img["updated_at"],
            "status": str(img.get("status", "active")).upper(),
            "progress": 100,
            "OS-EXT-IMG-SIZE:size": img.get("size"),
            "links": [
                *self.links("images", img["id"]),
                {
                    "rel": "alternate",
                    "type": "application/vnd.openstack.image",
                    "href": f"{self.base_url}//images/{img['id']}",
                },
            ],
        }

    async def get(self, image_id: str | None = None) -> None:
        ident = None if image_id == "detail" else image_id
        self.send_catalogue_part("images", "image", ident, self.image_view, "Image not found.")


class NovaNetworksHandler(NovaHandler):
    route = "/v2.1/os-networks"

    async def get(self) -> None:
        nets = [
            {
                "id": n["id"],
                "cidr": None,
                "netmask": None,
                "gateway": None,
                "broadcast": None,
                "dns1": None,
                "dns2": None,
                "cidr_v6": None,
                "gateway_v6": None,
                "label": n["name"],
                "netmask_v6": None,
            }
            for n in self.double.catalogue["networks"]
        ]
        self.send_json(200, {"networks": nets})


class NovaSecurityGroupsHandler(NovaHandler):
    route = "/v2.1/os-security-groups"

    async def get(self) -> None:
        _, project = self.token_identity()
        groups = [
            {
                "id": g["id"],
                "name": g["name"],
                "description": g.get("description", ""),
                "tenant_id": project,
                "rules": [],
            }
            for g in self.double.catalogue["security_groups"]
        ]
        self.send_json(200, {"security_groups": groups})


class KeypairsHandler(NovaHandler):
    route = "/v2.1/os-keypairs"

    async def get(self, name: str | None = None) -> None:
        pairs = self.double.catalogue["keypairs"]
        if name is None:
            self.send_json(200, {"keypairs": [{"keypair": dict(k)} for k in pairs]})
            return
        for k in pairs:
            if k["name"] == name:
                self.send_json(200, {"keypair": dict(k)})
                return
        user, _ = self.token_identity()
        self.nova_error(404, f"Keypair {name} not found for user {user}")


class ServersHandler(NovaHandler):
    route = "/v2.1/servers"
    build_error: dict[str, Any] | None = None

    async def post(self) -> None:
        body = self.json_body()
        user, project = self.token_identity()
        result = self.double.create_server(body, user, project, self.build_error)
        if isinstance(result, tuple):
            self.nova_error(*result)
            return
        s = result
        self.set_header("location", f"{self.base_url}/v2.1/servers/{s.id}")
        self.send_json(
            202,
            {
                "server": {
                    "id": s.id,
                    "links": self.links("servers", s.id),
                    "OS-DCF:diskConfig": "MANUAL",
                    # booted on a port, the answer still names "default" (recorded: ports/010);
                    # the server shows the port's
                    "security_groups": [{"name": n} for n in (["default"] if s.port_id else s.security_groups)],
                    "adminPass": s.admin_pass,
                }
            },
        )

    def filtered(self) -> list[ServerRecord]:
        servers = sorted(self.double.live_servers(), key=lambda s: s.created, reverse=True)
        name = self.get_query_argument("name", None)
        if name is not None:
            try:
                pattern = re.compile(name)
            except re.error:
                return []
            servers = [s for s in servers if pattern.search(s.name)]
        status = self.get_query_argument("status", None)
        if status is not None:
            servers = [s for s in servers if self.server_view(s)["status"] == status.upper()]
        return servers

    async def get(self, detail: str | None = None) -> None:
        paged = self.paged(self.filtered(), (400, "marker [{marker}] not found"))
        if paged is None:
            return
        page, more = paged
        if detail:
            body: dict[str, Any] = {"servers": [self.server_view(s, in_list=True) for s in page]}
        else:
            body = {"servers": [{"id": s.id, "links": self.links("servers", s.id), "name": s.name} for s in page]}
        if more:
            query = f"limit={len(page)}&marker={page[-1].id}"
            body["servers_links"] = [{"rel": "next", "href": f"{self.base_url}/v2.1/servers/detail?{query}"}]
        self.send_json(200, body)


class ServersDetailHandler(ServersHandler):
    route = "/v2.1/servers/detail"

    async def post(self, *_: str) -> None:  # type: ignore[override]
        self.nova_error(404, "The resource could not be found.")


class ServerHandler(NovaHandler):
    route = "/v2.1/servers/{id}"

    async def get(self, server_id: str) -> None:
        s = self.get_server(server_id)
        if s is not None:
            self.send_json(200, {"server": self.server_view(s)})

    async def put(self, server_id: str) -> None:
        """Nova's update: only ``name`` (what a rename sends)."""
        s = self.get_server(server_id)
        if s is None:
            return
        body = self.json_body()
        server = body.get("server") if isinstance(body, dict) else None
        name = server.get("name") if isinstance(server, dict) else None
        if not isinstance(name, str) or not name.strip() or len(name) > 255 or set(server) - {"name"}:
            self.nova_error(400, f"Invalid input for field/attribute server. Value: {server}.")
            return
        s.name, s.updated = name, time.time()
        self.send_json(200, {"server": self.server_view(s)})

    async def delete(self, server_id: str) -> None:
        s = self.get_server(server_id)
        if s is None:
            return
        self.double.delete_server(s)
        self.set_status(204)
        self.service_headers()


class ServerActionHandler(NovaHandler):
    """``POST /servers/{id}/action``: ``os-stop``, ``os-start``, ``shelve`` and ``unshelve`` (202, no body;
    409 from a state Nova does not allow the action in). Other actions are not part of the double."""

    route = "/v2.1/servers/{id}/action"

    async def post(self, server_id: str) -> None:
        s = self.get_server(server_id)
        if s is None:
            return
        body = self.json_body()
        if not isinstance(body, dict) or len(body) != 1:
            self.nova_error(400, "Malformed request body")
            return
        [action] = body
        if action not in SERVER_ACTIONS:
            self.nova_error(400, f"There is no such action: {action}")
            return
        refusal = self.double.server_action(s, action)
        if refusal is not None:
            self.nova_error(*refusal)
            return
        self.send_accepted("application/json")


class ServerMetadataHandler(NovaHandler):
    route = "/v2.1/servers/{id}/metadata"

    async def get(self, server_id: str) -> None:
        s = self.get_server(server_id)
        if s is not None:
            self.send_json(200, {"metadata": dict(s.metadata)})

    async def put(self, server_id: str) -> None:
        await self._set(server_id, replace=True)

    async def post(self, server_id: str) -> None:
        await self._set(server_id, replace=False)

    async def _set(self, server_id: str, replace: bool) -> None:
        s = self.get_server(server_id)
        if s is None:
            return
        body = self.json_body()
        meta = body.get("metadata") if isinstance(body, dict) else None
        if not isinstance(meta, dict) or any(not isinstance(v, str) for v in meta.values()):
            self.nova_error(400, f"Invalid input for field/attribute metadata. Value: {meta}.")
            return
        if replace:
            s.metadata = dict(meta)
        else:
            s.metadata.update(meta)
        s.updated = time.time()
        self.send_json(200, {"metadata": dict(s.metadata)})


def release_unless(kept: str | None) -> Callable[[VolumeRecord], None]:
    """What ends an attach or a detach: the attachment goes unless the volume ends ``kept`` (``in-use``)."""

    def settle(vol: VolumeRecord) -> None:
        if kept != "in-use":
            vol.attachment = None

    return settle


class VolumeAttachmentsHandler(NovaHandler):
    """``os-volume_attachments``: Nova attaches a Cinder volume (``attaching`` -> ``in-use``) and detaches
    it (``detaching`` -> ``available``); a ``volume`` fault changes where that ends and how long it takes."""

    route = "/v2.1/servers/{id}/os-volume_attachments"

    @staticmethod
    def attachment_view(v: VolumeRecord) -> dict[str, Any]:
        assert v.attachment is not None
        return {"id": v.id, "volumeId": v.id, "serverId": v.attachment["server_id"], "device": v.attachment["device"]}

    def target(self, server_id: str, volume_id: str | None) -> tuple[ServerRecord, VolumeRecord | None] | None:
        """The server and, if ``volume_id`` is given, its attached volume; None after answering 404."""
        s = self.get_server(server_id)
        if s is None or volume_id is None:
            return None if s is None else (s, None)
        v = next((v for v in self.double.attached_volumes(s.id) if v.id == volume_id), None)
        if v is None:
            self.nova_error(404, f"Instance {s.id} is not attached to volume {volume_id}")
            return None
        return s, v

    async def get(self, server_id: str, volume_id: str | None = None) -> None:
        found = self.target(server_id, volume_id)
        if found is None:
            return
        s, v = found
        if v is None:
            views = [self.attachment_view(a) for a in self.double.attached_volumes(s.id)]
            self.send_json(200, {"volumeAttachments": views})
        else:
            self.send_json(200, {"volumeAttachment": self.attachment_view(v)})

    def attach_refusal(self, s: ServerRecord, volume_id: Any) -> tuple[int, str] | None:
        if not isinstance(volume_id, str):
            return 400, "Invalid input for field/attribute volumeAttachment. 'volumeId' is a required property"
        if s.phase != "active" or s.deleting:
            vm_state = {"scheduling": "building", "spawning": "building"}.get(s.phase, s.phase)
            return 409, f"Cannot 'attach_volume' instance {s.id} while it is in vm_state {vm_state}"
        v = self.double.volumes.get(volume_id)
        if v is None or v.gone:
            return 404, f"Volume {volume_id} could not be found."
        if v.status != "available" or v.attachment is not None:
            return 400, f"Invalid volume: Volume {v.id} status must be available or downloading"
        return None

    async def post(self, server_id: str) -> None:
        found = self.target(server_id, None)
        if found is None:
            return
        s = found[0]
        body = self.json_body()
        spec = body.get("volumeAttachment") if isinstance(body, dict) else None
        volume_id = spec.get("volumeId") if isinstance(spec, dict) else None
        refusal = self.attach_refusal(s, volume_id)
        if refusal is not None:
            self.nova_error(*refusal)
            return
        v = self.double.volumes[volume_id]
        used = {a.attachment["device"] for a in self.double.attached_volumes(s.id) if a.attachment}
        device = next(f"/dev/vd{c}" for c in "bcdefghijklmnopqrstuvwxyz" if f"/dev/vd{c}" not in used)
        v.attachment = {
            "server_id": s.id,
            "attachment_id": str(uuid.uuid4()),
            "device": device,
            "attached_at": time.time(),
        }
        end, seconds = self.volume_outcome("in-use", self.double.config.volume_attaching_s)
        self.double.volume_transition(v, "attaching", end, seconds, done=release_unless(end))
        a = self.attachment_view(v)  # the create answer has its own key order (recorded)
        self.send_json(200, {"volumeAttachment": {k: a[k] for k in ("id", "serverId", "volumeId", "device")}})

    async def delete(self, server_id: str, volume_id: str) -> None:
        found = self.target(server_id, volume_id)
        if found is None:
            return
        v = found[1]
        assert v is not None
        if v.status != "in-use":
            self.nova_error(
                400,
                "Invalid volume: Unable to detach volume. Volume status must be 'in-use' and "
                "attach_status must be 'attached' to detach.",
            )
            return
        end, seconds = self.volume_outcome("available", self.double.config.volume_detaching_s)
        self.double.volume_transition(v, "detaching", end, seconds, done=release_unless(end))
        self.send_accepted("application/json")


class NovaNotFoundHandler(NotFoundMixin, NovaHandler):
    route = "/v2.1/*"


ROUTES = [
    (r"/v2\.1/flavors/(detail)", FlavorsHandler),
    (r"/v2\.1/flavors/([^/]+)", type("FlavorHandler", (FlavorsHandler,), {"route": "/v2.1/flavors/{id}"})),
    (r"/v2\.1/images/(detail)", NovaImagesHandler),
    (r"/v2\.1/images/([^/]+)", type("NovaImageHandler", (NovaImagesHandler,), {"route": "/v2.1/images/{id}"})),
    (r"/v2\.1/os-networks", NovaNetworksHandler),
    (r"/v2\.1/os-security-groups", NovaSecurityGroupsHandler),
    (r"/v2\.1/os-keypairs", KeypairsHandler),
    (r"/v2\.1/os-keypairs/([^/]+)", type("KeypairHandler", (KeypairsHandler,), {"route": "/v2.1/os-keypairs/{name}"})),
    (r"/v2\.1/servers", ServersHandler),
    (r"/v2\.1/servers/(detail)", ServersDetailHandler),
    (r"/v2\.1/servers/([^/]+)", ServerHandler),
    (r"/v2\.1/servers/([^/]+)/metadata", ServerMetadataHandler),
    (r"/v2\.1/servers/([^/]+)/action", ServerActionHandler),
    (r"/v2\.1/servers/([^/]+)/os-volume_attachments", VolumeAttachmentsHandler),
    (
        r"/v2\.1/servers/([^/]+)/os-volume_attachments/([^/]+)",
        type(
            "VolumeAttachmentHandler",
            (VolumeAttachmentsHandler,),
            {"route": "/v2.1/servers/{id}/os-volume_attachments/{volume id}"},
        ),
    ),
    (r"/v2\.1/(.*)", NovaNotFoundHandler),
]
