"""Cinder v3 (``volume 3.0``, no microversion header): volumes (create, list, show, update, delete), as
recorded in ``recordings/cinder/`` (the update in ``recordings/cinder/update/``). The catalog names it like the
dev cloud: type ``volumev3``, name ``cinder``, ``URL/v3/<project id>``. Nova's side of attachments
(``os-volume_attachments``) is in ``nova.py``; both change a volume's status through
:meth:`~testkit.osdouble.state.Double.volume_transition`."""

from __future__ import annotations

import ast
import time
import uuid
from typing import Any

from .base import BaseHandler, NotFoundMixin
from .records import iso_micro
from .volumestate import VolumeRecord

#: the statuses from which Cinder deletes a volume (``cinder/volume/api.py``)
DELETABLE = ("available", "error", "error_restoring", "error_extending", "error_managing")
NOT_DELETABLE_MESSAGE = (
    "Invalid volume: Volume status must be available or error or error_restoring or error_extending or "
    "error_managing and must not be migrating, attached, belong to a group, have snapshots or be "
    "disassociated from snapshots after volume transfer."
)
MAX_LIMIT = 1000  # Cinder's osapi_max_limit


def iso_seconds(t: float | None) -> str | None:
    """Cinder's stored dates: whole seconds, printed with ``.000000`` (the create answer has microseconds)."""
    return None if t is None else iso_micro(int(t))


def volume_view(base_url: str, v: VolumeRecord, created: bool = False, tenant: bool | None = None) -> dict[str, Any]:
    """A volume as Cinder 3.0 shows it, in the recorded key order (the create answer has microseconds in
    ``created_at``; neither it nor the update answer has ``os-vol-tenant-attr:tenant_id``)."""
    attachments = []
    if v.attachment is not None and v.status in ("in-use", "detaching"):
        a = v.attachment
        attachments.append(
            {
                "id": v.id,
                "attachment_id": a["attachment_id"],
                "volume_id": v.id,
                "server_id": a["server_id"],
                "host_name": None,
                "device": a["device"],
                "attached_at": iso_seconds(a["attached_at"]),
            }
        )
    view: dict[str, Any] = {
        "id": v.id,
        "status": v.status,
        "size": v.size,
        "availability_zone": "nova",
        "created_at": iso_micro(v.created) if created else iso_seconds(v.created),
        "updated_at": iso_seconds(v.updated),
        "name": v.name,
        "description": v.description,
        "volume_type": v.volume_type,
        "snapshot_id": None,
        "source_volid": None,
        "metadata": dict(v.metadata),
        "links": [
            {"rel": "self", "href": f"{base_url}/v3/{v.tenant_id}/volumes/{v.id}"},
            {"rel": "bookmark", "href": f"{base_url}/{v.tenant_id}/volumes/{v.id}"},
        ],
        "user_id": v.user_id,
        "bootable": "false",
        "encrypted": False,
        "replication_status": None,
        "consistencygroup_id": None,
        "multiattach": False,
        "attachments": attachments,
    }
    if not created if tenant is None else tenant:
        view["os-vol-tenant-attr:tenant_id"] = v.tenant_id
    return view


class CinderHandler(BaseHandler):
    service = "volume"

    def service_headers(self) -> None:
        self.set_header("x-compute-request-id", self.req_id)
        self.set_header("OpenStack-API-Version", "volume 3.0")
        self.set_header("Vary", "OpenStack-API-Version")
        self.set_header("x-openstack-request-id", self.req_id)

    def project_ok(self, project: str) -> bool:
        """Cinder refuses a URL whose project is not the token's."""
        if project != self.token_identity()[1]:
            self.send_error_body(400, "Malformed request url")
            return False
        return True

    def get_volume(self, project: str, volume_id: str) -> VolumeRecord | None:
        if not self.project_ok(project):
            return None
        return self.live_record(self.double.volumes, volume_id, f"Volume {volume_id} could not be found.")


class VolumesHandler(CinderHandler):
    route = "/v3/{project}/volumes"

    def validate(self, body: Any) -> dict[str, Any] | tuple[int, str]:
        volume = body.get("volume") if isinstance(body, dict) else None
        if not isinstance(volume, dict):
            return 400, "Missing required element 'volume' in request body."
        size = volume.get("size")
        if isinstance(size, str) and size.isdigit():
            size = int(size)
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            return 400, f"Invalid input for field/attribute size. Value: {size}. {size!r} is not valid"
        name = volume.get("name")
        if name is not None and (not isinstance(name, str) or len(name) > 255):
            return 400, f"Invalid input for field/attribute name. Value: {name}."
        metadata = volume.get("metadata") or {}
        if not isinstance(metadata, dict) or any(
            not isinstance(v, str) or len(k) > 255 or len(v) > 255 for k, v in metadata.items()
        ):
            return 400, f"Invalid input for field/attribute metadata. Value: {metadata}."
        wanted = volume.get("volume_type") or "__DEFAULT__"
        vtype = next((t for t in self.double.catalogue["volume_types"] if wanted in (t["name"], t["id"])), None)
        if vtype is None:
            return 404, f"Volume type with name {wanted} could not be found."
        return {
            "size": size,
            "name": name,
            "description": volume.get("description"),
            "metadata": dict(metadata),
            "volume_type": vtype["name"],
        }

    def quota_error(self, size: int) -> str | None:
        quotas = self.double.catalogue["quotas"]
        live = self.double.live_volumes()
        allowed = int(quotas.get("volumes", -1))
        if 0 <= allowed <= len(live):
            return f"Maximum number of volumes allowed ({allowed}) exceeded for quota 'volumes'."
        quota, used = int(quotas.get("gigabytes", -1)), sum(v.size for v in live)
        if 0 <= quota < used + size:
            return (
                f"Requested volume or snapshot exceeds allowed gigabytes quota. Requested {size}G, quota is "
                f"{quota}G and {used}G has been consumed."
            )
        return None

    async def post(self, project: str) -> None:
        if not self.project_ok(project):
            return
        spec = self.validate(self.json_body())
        if isinstance(spec, tuple):
            self.send_error_body(*spec)
            return
        over = self.quota_error(spec["size"])
        if over:
            self.send_error_body(413, over)
            return
        user, project_id = self.token_identity()
        v = VolumeRecord(id=str(uuid.uuid4()), tenant_id=project_id, user_id=user, created=time.time(), **spec)
        self.double.volumes[v.id] = v
        end, seconds = self.volume_outcome("available", self.double.config.volume_creating_s)
        self.double.volume_transition(v, "creating", end, seconds)
        self.send_json(202, {"volume": volume_view(self.base_url, v, created=True)}, "application/json")

    def filtered(self) -> list[VolumeRecord]:
        vols = sorted(self.double.live_volumes(), key=lambda v: v.created, reverse=True)
        name = self.get_query_argument("name", None)
        if name is not None:
            vols = [v for v in vols if v.name == name]
        status = self.get_query_argument("status", None)
        if status is not None:
            vols = [v for v in vols if v.status == status]
        metadata = self.get_query_argument("metadata", None)
        if metadata is not None:
            try:  # Cinder reads the filter as a Python literal: metadata={'k': 'v'}
                wanted = ast.literal_eval(metadata)
            except (ValueError, SyntaxError):
                wanted = None
            if not isinstance(wanted, dict):
                return []
            vols = [v for v in vols if all(v.metadata.get(k) == str(val) for k, val in wanted.items())]
        return vols

    async def get(self, project: str, detail: str | None = None) -> None:
        if not self.project_ok(project):
            return
        paged = self.paged(self.filtered(), (404, "Marker {marker} could not be found."), MAX_LIMIT)
        if paged is None:
            return
        page, more = paged
        if detail:
            body: dict[str, Any] = {"volumes": [volume_view(self.base_url, v) for v in page]}
        else:
            body = {
                "volumes": [{"id": v.id, "links": volume_view(self.base_url, v)["links"], "name": v.name} for v in page]
            }
        if more:
            kind = "volumes/detail" if detail else "volumes"
            href = f"{self.base_url}/v3/{project}/{kind}?limit={len(page)}&marker={page[-1].id}"
            body["volumes_links"] = [{"rel": "next", "href": href}]
        self.send_json(200, body)


class VolumesDetailHandler(VolumesHandler):
    route = "/v3/{project}/volumes/detail"

    async def post(self, project: str, *_: str) -> None:
        self.send_error_body(404, "The resource could not be found.")


class VolumeHandler(CinderHandler):
    route = "/v3/{project}/volumes/{id}"

    async def get(self, project: str, volume_id: str) -> None:
        v = self.get_volume(project, volume_id)
        if v is not None:
            self.send_json(200, {"volume": volume_view(self.base_url, v)})

    async def put(self, project: str, volume_id: str) -> None:
        """Update name, description and metadata; a metadata given replaces the volume's whole metadata."""
        v = self.get_volume(project, volume_id)
        if v is None:
            return
        body = self.json_body()
        volume = body.get("volume") if isinstance(body, dict) else None
        if not isinstance(volume, dict) or not volume:
            self.send_error_body(400, "Missing required element 'volume' in request body.")
            return
        name, metadata = volume.get("name", v.name), volume.get("metadata", v.metadata)
        if name is not None and (not isinstance(name, str) or len(name) > 255):
            self.send_error_body(400, f"Invalid input for field/attribute name. Value: {name}.")
            return
        if not isinstance(metadata, dict) or any(not isinstance(x, str) or len(x) > 255 for x in metadata.values()):
            self.send_error_body(400, f"Invalid input for field/attribute metadata. Value: {metadata}.")
            return
        v.name, v.metadata = name, dict(metadata)
        v.description = volume.get("description", v.description)
        v.updated = time.time()
        self.send_json(200, {"volume": volume_view(self.base_url, v, tenant=False)})

    async def delete(self, project: str, volume_id: str) -> None:
        v = self.get_volume(project, volume_id)
        if v is None:
            return
        if v.status not in DELETABLE or v.attachment is not None:
            self.send_error_body(400, NOT_DELETABLE_MESSAGE)
            return
        end, seconds = self.volume_outcome(None, self.double.config.volume_deleting_s)
        self.double.volume_transition(v, "deleting", end, seconds)
        self.send_accepted("text/html; charset=UTF-8")


class CinderNotFoundHandler(NotFoundMixin, CinderHandler):
    route = "/v3/{project}/*"


ROUTES = [
    (r"/v3/([0-9a-f]{32})/volumes", VolumesHandler),
    (r"/v3/([0-9a-f]{32})/volumes/(detail)", VolumesDetailHandler),
    (r"/v3/([0-9a-f]{32})/volumes/([^/]+)", VolumeHandler),
    (r"/v3/([0-9a-f]{32})/(.*)", CinderNotFoundHandler),
]
