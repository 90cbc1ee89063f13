"""The request handler every API service derives from: call recording, latency, fault rules, token check,
OpenStack-style errors; and the catch-all 404 of the API port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, TypeVar

from tornado import web

from .errors import error_response
from .records import CallRecord, request_id
from .state import Double, quota_message

R = TypeVar("R")


class BaseHandler(web.RequestHandler):
    service = "identity"
    route = ""
    needs_token = True
    #: a ``volume`` fault effect for this request (see faults.py): how the status change it starts goes
    volume_effect: dict[str, Any] | None = None

    def initialize(self, double: Double) -> None:
        self.double = double
        self.call: CallRecord | None = None
        self._lose_response = False
        self._t0 = time.monotonic()
        self.req_id = request_id()

    # tornado adds these by default; OpenStack services do not send them
    def compute_etag(self) -> None:
        return None

    def set_default_headers(self) -> None:
        self.clear_header("Server")
        self.clear_header("Content-Type")

    @property
    def base_url(self) -> str:
        return f"{self.request.protocol}://{self.request.host}"

    def service_headers(self) -> None:
        self.set_header("x-openstack-request-id", self.req_id)

    def send_json(self, status: int, body: Any, content_type: str = "application/json") -> None:
        self.set_status(status)
        self.service_headers()
        self.set_header("Content-Type", content_type)
        self.finish(json.dumps(body))

    def live_record(self, table: dict[str, R], key: str, not_found: str) -> R | None:
        """A server or volume that exists (not deleted yet), or None after answering 404 ``not_found``."""
        rec = table.get(key)
        if rec is None or getattr(rec, "gone", False):
            self.send_error_body(404, not_found)
            return None
        return rec

    def paged(
        self, items: list[R], missing_marker: tuple[int, str], max_limit: int = 1000
    ) -> tuple[list[R], bool] | None:
        """The ``marker`` and ``limit`` of a list request: the page and whether more follow; None after answering
        ``missing_marker`` (status, message; ``{marker}`` in it) for a marker not in ``items``."""
        marker = self.get_query_argument("marker", None)
        if marker is not None:
            ids = [getattr(i, "id", None) for i in items]
            if marker not in ids:
                self.send_error_body(missing_marker[0], missing_marker[1].format(marker=marker))
                return None
            items = items[ids.index(marker) + 1 :]
        limit_arg = self.get_query_argument("limit", None)
        limit = min(int(limit_arg), max_limit) if limit_arg and limit_arg.isdigit() else max_limit
        return items[:limit], len(items) > limit

    def send_accepted(self, content_type: str) -> None:
        """202 with an empty body (Nova's detach, Cinder's delete: each with its recorded Content-Type)."""
        self.set_status(202)
        self.service_headers()
        self.set_header("Content-Type", content_type)
        self.finish()

    def send_error_body(self, status: int, message: str | None = None, retry_after: float | None = None) -> None:
        headers, body = error_response(self.service, status, message, retry_after=retry_after)
        self.set_status(status)
        if status == 401 and self.service != "identity":
            # keystonemiddleware refuses before the service adds its own (version) headers
            self.set_header("x-openstack-request-id", self.req_id)
        else:
            self.service_headers()
        for k, v in headers.items():
            self.set_header(k, v)
        if status == 401:
            self.set_header("WWW-Authenticate", f'Keystone uri="{self.base_url}/v3"')
        self.finish(body)

    def send_catalogue_part(
        self,
        part: str,
        singular: str,
        ident: str | None,
        view: Callable[[dict[str, Any]], dict[str, Any]],
        not_found: str,
    ) -> None:
        """GET of a catalogue part: the whole list without ``ident``, the one item with it, else 404."""
        if ident is None:
            self.send_json(200, {part: [view(item) for item in self.double.catalogue[part]]})
            return
        item = self.double.find(part, ident)
        if item is None:
            self.send_error_body(404, not_found)
            return
        self.send_json(200, {singular: view(item)})

    def volume_outcome(self, default: str | None, seconds: float) -> tuple[str | None, float]:
        """Where the volume status change this request starts ends, and how long it takes: ``default`` and
        ``seconds`` unless a ``volume`` fault rule says otherwise."""
        effect = self.volume_effect or {}
        return effect.get("status", default), float(effect.get("seconds", seconds))

    def json_body(self) -> Any:
        if not self.request.body:
            return None
        try:
            return json.loads(self.request.body)
        except ValueError:
            return None

    async def prepare(self) -> None:
        self.call = self.double.record_call(
            self.request.method or "", self.request.path, self.request.query, self.service, self.route
        )
        if self.double.config.latency_s > 0:
            await asyncio.sleep(self.double.config.latency_s)
        rule = self.double.match_rule(self.request.method or "", self.request.path, self.service)
        if rule is not None:
            self.call.rule = rule.id
            self.call.effect = rule.effect["type"]
            if rule.delay_s:
                await asyncio.sleep(rule.delay_s)
            await self.apply_effect(rule.effect)
            if self._finished:
                return
        if self.needs_token and not self.double.token_ok(self.request.headers.get("X-Auth-Token")):
            self.send_error_body(401)

    async def apply_effect(self, effect: dict[str, Any]) -> None:
        kind = effect["type"]
        if kind == "status":
            status, message = int(effect["status"]), effect.get("message")
            m = re.match(r"^/v2\.1/servers/([^/]+)$", self.request.path)
            v = re.match(r"^/v3/[^/]+/volumes/([^/]+)$", self.request.path)
            if status == 404 and message is None and m and m.group(1) != "detail":
                message = f"Instance {m.group(1)} could not be found."
            elif status == 404 and message is None and v and v.group(1) != "detail":
                message = f"Volume {v.group(1)} could not be found."
            self.send_error_body(status, message, effect.get("retry_after"))
        elif kind == "rate_limit":
            self.send_error_body(
                int(effect.get("status", 413)), effect.get("message"), float(effect.get("retry_after", 1))
            )
        elif kind == "unauthorized":
            self.double.revoke_token(self.request.headers.get("X-Auth-Token"))
            self.send_error_body(401)
        elif kind == "quota":
            self.send_error_body(403, self.forced_quota_message(effect))
        elif kind == "delay":
            await asyncio.sleep(float(effect.get("seconds", 60)))
        elif kind == "reset":
            self.abort_connection(rst=True)
        elif kind == "drop":
            self.abort_connection(rst=False)
        elif kind == "lost_response":
            self._lose_response = True
        elif kind == "build_error":
            self.build_error = effect
        elif kind == "volume":
            self.volume_effect = effect
        elif kind == "api_down":
            self.abort_connection(rst=True)
            asyncio.get_running_loop().create_task(self.double.stop_api(float(effect.get("seconds", 5))))

    def forced_quota_message(self, effect: dict[str, Any]) -> str:
        resource = effect.get("resource", "instances")
        quotas = self.double.catalogue["quotas"]
        live = self.double.live_servers()
        used = {
            "instances": len(live),
            "cores": sum(int(s.flavor["vcpus"]) for s in live),
            "ram": sum(int(s.flavor["ram"]) for s in live),
        }
        req = {"instances": 1, "cores": 1, "ram": 2048}
        limits = {r: max(used[r], 0) for r in used}
        limits.update({resource: min(quotas.get(resource, used[resource]), used[resource])})
        return quota_message([resource], req, used, limits)

    def abort_connection(self, rst: bool) -> None:
        stream = self.request.connection.stream  # type: ignore[union-attr]
        sock = stream.socket
        if rst and sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        stream.close()
        self._finished = True
        self._record_finish(0)

    def finish(self, chunk: Any = None) -> Any:
        if self._lose_response and not self._finished:
            self.abort_connection(rst=True)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut
        return super().finish(chunk)

    def _record_finish(self, status: int) -> None:
        if self.call is not None and self.call.status is None:
            self.call.status = status
            self.call.duration_s = round(time.monotonic() - self._t0, 4)

    def on_finish(self) -> None:
        self._record_finish(self.get_status())

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        headers, body = error_response(self.service, status_code)
        for k, v in headers.items():
            self.set_header(k, v)
        self.finish(body)

    def token_identity(self) -> tuple[str, str]:
        ident = self.double.identity()
        return ident["user"]["id"], ident["project"]["id"]


class NotFoundMixin:
    """A service's answer to a path it does not serve: its own 404 body, whatever the method."""

    async def get(self: Any, *_: str) -> None:
        self.send_error_body(404, "The resource could not be found.")

    post = put = delete = get


class ApiNotFoundHandler(BaseHandler):
    needs_token = False
    route = "*"

    async def prepare(self) -> None:
        path = self.request.path
        self.service = (
            "compute"
            if path.startswith("/v2.1")
            else "network"
            if path.startswith("/v2.0")
            else "image"
            if path.startswith("/v2/")
            else "identity"
        )
        if re.match(r"^/v3/[0-9a-f]{32}/", path):
            self.service = "volume"
        await super().prepare()

    async def get(self, *_: str) -> None:
        self.send_error_body(404, "The resource could not be found.")

    post = put = delete = patch = head = get
