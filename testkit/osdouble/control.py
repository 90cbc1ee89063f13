"""The control API under ``/_double/`` (faults, catalogue, config, servers, volumes, calls, tokens, API
stop/start, reset); see docs/osdouble.md."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections import Counter
from dataclasses import asdict
from typing import Any, TypeVar

from tornado import web

from . import catalogue as catalogue_mod
from .cloudconfig import decode_user_data
from .faults import RuleError
from .records import ServerRecord
from .state import Double
from .volumestate import VolumeRecord

T = TypeVar("T")


class ControlHandler(web.RequestHandler):
    """JSON control API under /_double/ (see docs/osdouble.md)."""

    def initialize(self, double: Double) -> None:
        self.double = double

    def compute_etag(self) -> None:
        return None

    def body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        data = json.loads(self.request.body)
        if not isinstance(data, dict):
            raise web.HTTPError(400, "JSON object expected")
        return data

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or str(exc) or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message}))

    def with_deleted(self) -> bool:
        """``?deleted=1``: list deleted records too."""
        return self.get_query_argument("deleted", "0") in ("1", "true", "yes")

    @staticmethod
    def record(table: dict[str, T], key: str, kind: str) -> T:
        if key not in table:
            raise web.HTTPError(404, f"no {kind} {key}")
        return table[key]

    def server_summary(self, s: ServerRecord) -> dict[str, Any]:
        host = s.host
        return {
            "id": s.id,
            "name": s.name,
            "phase": s.phase,
            "deleting": s.deleting,
            "gone": s.gone,
            "status": "DELETED" if s.gone else s.status,
            "task_state": s.task_state,
            "address": s.address,
            "metadata": s.metadata,
            "flavor": s.flavor["name"],
            "image_id": s.image_id,
            "fault": s.fault,
            "created": s.created,
            "deleted_at": s.deleted_at,
            "no_run": s.no_run,
            "boot_status": host.status if host else None,
            "boot_reason": host.reason if host else None,
            "pids": host.pids() if host else [],
        }


class CtlHealth(ControlHandler):
    def get(self) -> None:
        d = self.double
        self.reply({"ok": True, "api_up": d.api_up, "url": f"http://{d.api_host}:{d.api_port}"})


class CtlConfig(ControlHandler):
    def get(self) -> None:
        self.reply(asdict(self.double.config))

    def patch(self) -> None:
        try:
            self.double.config.update(self.body())
        except (KeyError, ValueError, re.error) as exc:
            raise web.HTTPError(400, str(exc)) from exc
        self.reply(asdict(self.double.config))

    put = patch


class CtlCatalogue(ControlHandler):
    def get(self) -> None:
        self.reply(self.double.catalogue)

    def put(self) -> None:
        data = self.body()
        if "preset" in data:
            try:
                self.double.catalogue = catalogue_mod.preset(data.pop("preset"))
            except KeyError as exc:
                raise web.HTTPError(400, str(exc)) from exc
        for part, value in data.items():
            if part in ("images", "flavors", "networks", "security_groups", "keypairs", "volume_types"):
                self.double.catalogue[part] = catalogue_mod.normalise(part, value)
            elif part in ("identity", "quotas", "host"):
                self.double.catalogue[part].update(value)
            else:
                raise web.HTTPError(400, f"unknown catalogue part {part!r}")
        self.reply(self.double.catalogue)


class CtlFaults(ControlHandler):
    def get(self) -> None:
        self.reply([r.to_json() for r in self.double.rules])

    def post(self) -> None:
        try:
            rule = self.double.add_rule(self.body())
        except RuleError as exc:
            raise web.HTTPError(400, str(exc)) from exc
        self.reply(rule.to_json(), 201)

    def delete(self) -> None:
        self.double.rules.clear()
        self.reply({"cleared": True})


class CtlFault(ControlHandler):
    def get(self, rule_id: str) -> None:
        for r in self.double.rules:
            if r.id == int(rule_id):
                self.reply(r.to_json())
                return
        raise web.HTTPError(404, f"no rule {rule_id}")

    def delete(self, rule_id: str) -> None:
        before = len(self.double.rules)
        self.double.rules = [r for r in self.double.rules if r.id != int(rule_id)]
        if len(self.double.rules) == before:
            raise web.HTTPError(404, f"no rule {rule_id}")
        self.reply({"deleted": int(rule_id)})


class CtlServers(ControlHandler):
    def get(self) -> None:
        servers = [s for s in self.double.servers.values() if self.with_deleted() or not s.gone]
        self.reply([self.server_summary(s) for s in sorted(servers, key=lambda s: s.created)])


class CtlPorts(ControlHandler):
    async def get(self) -> None:
        """Neutron ports not deleted (their API view), oldest first."""
        ports = sorted((p for p in self.double.ports.values() if not p.gone), key=lambda p: p.created)
        self.reply([p.view() for p in ports])


class CtlServer(ControlHandler):
    def get_rec(self, server_id: str) -> ServerRecord:
        return self.record(self.double.servers, server_id, "server")

    def get(self, server_id: str, what: str | None = None) -> None:
        s = self.get_rec(server_id)
        if what is None:
            data = self.server_summary(s)
            data["boot"] = s.host.report() if s.host else (s.plan.report() if s.plan else None)
            self.reply(data)
        elif what == "boot":
            if s.host is not None:
                self.reply(s.host.report())
            elif s.plan is not None:
                self.reply({**s.plan.report(), "status": "pending", "address": s.address, "processes": []})
            else:
                self.reply(None)
        elif what == "env":
            self.reply([{"unit": r.unit.name, "env": r.env} for r in (s.host.units if s.host else [])])
        elif what == "log":
            path = s.host.console_log if s.host else None
            text = path.read_text(errors="replace") if path and path.exists() else ""
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(text)
        elif what == "user_data":
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(decode_user_data(s.user_data))
        else:
            raise web.HTTPError(404)

    async def post(self, server_id: str, what: str | None = None) -> None:
        s = self.get_rec(server_id)
        data = self.body()
        if what in ("systemctl", "useradd"):
            # a fake VM's root process ran one of these (testkit/osdouble/vmbin): do it to the fake VM
            argv = data.get("argv")
            if s.host is None or not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
                raise web.HTTPError(400, "an instance that booted and an 'argv' list of strings are needed")
            status, message = await (s.host.systemctl(argv) if what == "systemctl" else s.host.useradd(argv))
            self.reply({"status": status, "message": message})
        elif what == "error":
            fault = {"code": int(data.get("code", 500)), "message": data.get("message", "No valid host was found. ")}
            if s.task is not None and not s.task.done():
                s.task.cancel()
            self.double._set_error(s, fault)
            if s.host is not None and data.get("kill", True):
                asyncio.get_running_loop().create_task(s.host.stop(self.double.config.kill_timeout_s))
            self.reply(self.server_summary(s))
        elif what == "shutoff":  # the guest shut down, or its host rebooted: SHUTOFF behind the hub's back
            if s.phase != "active" or s.deleting:
                raise web.HTTPError(409, f"server {s.id} is {s.phase}")
            await self.double.power_off(s)
            self.reply(self.server_summary(s))
        elif what == "kill":
            sig = getattr(signal, str(data.get("signal", "SIGKILL")), None)
            if not isinstance(sig, signal.Signals):
                raise web.HTTPError(400, f"unknown signal {data.get('signal')!r}")
            killed = s.host.kill_process(sig) if s.host else []
            self.reply({"killed": killed})
        else:
            raise web.HTTPError(404)


def volume_summary(v: VolumeRecord) -> dict[str, Any]:
    return {
        "id": v.id,
        "name": v.name,
        "status": "deleted" if v.gone else v.status,
        "size": v.size,
        "volume_type": v.volume_type,
        "metadata": v.metadata,
        "attachment": v.attachment,
        "created": v.created,
        "gone": v.gone,
    }


class CtlVolumes(ControlHandler):
    def get(self) -> None:
        vols = [v for v in self.double.volumes.values() if self.with_deleted() or not v.gone]
        self.reply([volume_summary(v) for v in sorted(vols, key=lambda v: v.created)])


class CtlVolume(ControlHandler):
    def get_rec(self, volume_id: str) -> VolumeRecord:
        return self.record(self.double.volumes, volume_id, "volume")

    def get(self, volume_id: str) -> None:
        self.reply(volume_summary(self.get_rec(volume_id)))

    def post(self, volume_id: str, what: str) -> None:
        """``POST /_double/volumes/{id}/status {"status": "error"}``: the volume is in that status now and
        stays there (a volume stuck in ``error``, ``detaching``...)."""
        v = self.get_rec(volume_id)
        status = self.body().get("status")
        if not isinstance(status, str) or not status:
            raise web.HTTPError(400, "a 'status' string is needed")
        self.double.set_volume_status(v, status)
        self.reply(volume_summary(v))


class CtlCalls(ControlHandler):
    def get(self) -> None:
        since = int(self.get_query_argument("since", "0"))
        calls = [asdict(c) for c in self.double.calls if c.seq > since]
        self.reply(calls)

    def delete(self) -> None:
        self.double.calls.clear()
        self.reply({"cleared": True})


class CtlCounts(ControlHandler):
    def get(self) -> None:
        by_route = Counter(f"{c.method} {c.route}" for c in self.double.calls)
        by_status = Counter(f"{c.method} {c.route} {c.status}" for c in self.double.calls)
        self.reply({"total": len(self.double.calls), "by_route": dict(by_route), "by_status": dict(by_status)})


class CtlTokens(ControlHandler):
    def post(self, action: str) -> None:
        if action != "expire":
            raise web.HTTPError(404)
        self.reply({"expired": self.double.expire_all_tokens()})


class CtlApi(ControlHandler):
    async def post(self, action: str) -> None:
        data = self.body()
        if action == "stop":
            loop = asyncio.get_running_loop()
            # answer first: this request may itself have come in on the API port
            loop.call_later(0.05, lambda: loop.create_task(self.double.stop_api(data.get("for_s"))))
            self.reply({"api_up": False, "for_s": data.get("for_s")})
        elif action == "start":
            await self.double.start_api()
            self.reply({"api_up": True})
        else:
            raise web.HTTPError(404)


class CtlReset(ControlHandler):
    async def post(self) -> None:
        data = self.body()
        await self.double.reset(config=bool(data.get("config")), catalogue=bool(data.get("catalogue")))
        self.reply({"reset": True})


#: the control API, on the API port and on the control-only port
ROUTES = [
    (r"/_double/health", CtlHealth),
    (r"/_double/config", CtlConfig),
    (r"/_double/catalogue", CtlCatalogue),
    (r"/_double/faults", CtlFaults),
    (r"/_double/faults/(\d+)", CtlFault),
    (r"/_double/servers", CtlServers),
    (r"/_double/ports", CtlPorts),
    (r"/_double/servers/([^/]+)", CtlServer),
    (r"/_double/servers/([^/]+)/(boot|env|log|user_data|error|kill|shutoff|systemctl|useradd)", CtlServer),
    (r"/_double/volumes", CtlVolumes),
    (r"/_double/volumes/([^/]+)", CtlVolume),
    (r"/_double/volumes/([^/]+)/(status)", CtlVolume),
    (r"/_double/calls", CtlCalls),
    (r"/_double/calls/counts", CtlCounts),
    (r"/_double/tokens/(\w+)", CtlTokens),
    (r"/_double/api/(\w+)", CtlApi),
    (r"/_double/reset", CtlReset),
]
