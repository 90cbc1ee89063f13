"""The OpenStack API double: Keystone v3, Nova v2.1, Glance v2, Neutron v2.0 and the /_double/ control API.

One asyncio process (tornado). The API listens on one port; every service lives under its own path
prefix, and the Keystone catalog points every service at that same port (``/v2.1`` Nova, ``/v2`` Glance,
``/v2.0`` Neutron, ``/v3`` Keystone). The control API (``/_double/...``) is served on that port and on a
second, control-only port that stays up while the API is "stopped" (connection refused).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import datetime as dt
import hashlib
import ipaddress
import json
import logging
import re
import secrets
import signal
import socket
import struct
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tornado import httpserver, netutil, web

from . import catalogue as catalogue_mod
from .cloudconfig import BootPlan, build_plan, decode_user_data
from .errors import error_response
from .faults import Rule, RuleError
from .instances import InstanceHost, service_port

log = logging.getLogger("osdouble")

USER_DATA_MAX = 65535
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso_z(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_micro(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")


def request_id() -> str:
    return f"req-{uuid.uuid4()}"


def _same_name(given: Any, name: str) -> bool:
    """Keystone's SQL backend compares names with MySQL's case-insensitive collation: `default` is `Default`
    (the original documentation's `ex_domain_name: "default"` works on a real cloud, as recorded by the
    dev cloud's smoke script)."""
    return isinstance(given, str) and given.casefold() == name.casefold()


@dataclass
class Config:
    """Behaviour knobs; all settable at start (CLI) and at run time (``PATCH /_double/config``)."""

    latency_s: float = 0.0  # added to every API call (asyncio sleep: concurrency is preserved)
    scheduling_s: float = 0.5  # BUILD / task_state scheduling
    spawning_s: float = 1.0  # BUILD / task_state spawning
    delete_linger_s: float = 1.0  # after DELETE: 200 with task_state deleting, then 404
    boot_delay_s: float = 0.0  # from ACTIVE until the unit starts (the OS booting)
    token_ttl_s: float = 3600.0  # expires_at - issued_at, enforced
    token_revoke_after_s: float | None = None  # tokens stop working after this, whatever expires_at says
    no_run: bool = False  # do not run ExecStart; answer HTTP 200 with a stand-in instead
    no_run_names: str | None = None  # regex: servers whose name matches get the stand-in (per instance)
    standin_port: int = 8888  # stand-in port when the user-data names none
    kill_timeout_s: float = 5.0  # SIGTERM -> SIGKILL
    subnet: str = "127.0.0.0/24"  # where instance addresses come from (127.0.0.1 is never used)

    def update(self, data: dict[str, Any]) -> None:
        for key, value in data.items():
            if key not in self.__dataclass_fields__:
                raise KeyError(f"unknown config key {key!r}")
            if key == "subnet":
                ipaddress.ip_network(value)
            if key == "no_run_names" and value is not None:
                re.compile(value)
            setattr(self, key, value)


@dataclass
class Token:
    value: str
    issued: float
    expires: float
    revoke_at: float | None
    method: str
    revoked: bool = False

    def valid(self, now: float) -> bool:
        if self.revoked or now >= self.expires:
            return False
        return not (self.revoke_at is not None and now >= self.revoke_at)


@dataclass
class ServerRecord:
    id: str
    name: str
    image_id: str
    flavor: dict[str, Any]
    networks: list[dict[str, Any]]
    metadata: dict[str, str]
    user_data: str | None
    config_drive: str
    key_name: str | None
    security_groups: list[str]
    admin_pass: str
    tenant_id: str
    user_id: str
    created: float
    updated: float
    phase: str = "scheduling"  # scheduling | spawning | active | error
    launched: float | None = None
    fault: dict[str, Any] | None = None
    fault_in_list: bool = True
    planned_fault: dict[str, Any] | None = None
    deleting: bool = False
    deleted_at: float | None = None
    gone: bool = False
    address: str | None = None
    mac: str = ""
    no_run: bool = False
    plan: BootPlan | None = None
    host: InstanceHost | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


@dataclass
class CallRecord:
    seq: int
    t: float
    method: str
    path: str
    query: str
    service: str
    route: str
    status: int | None = None
    duration_s: float | None = None
    effect: str | None = None
    rule: int | None = None


class Double:
    """All state of the double, independent of HTTP."""

    def __init__(self, config: Config, state_dir: Path, catalogue: dict[str, Any]):
        self.config = config
        self.initial_config = copy.deepcopy(config)
        self.state_dir = state_dir
        self.catalogue = catalogue
        self.servers: dict[str, ServerRecord] = {}
        self.tokens: dict[str, Token] = {}
        self.rules: list[Rule] = []
        self.rule_seq = 0
        self.calls: list[CallRecord] = []
        self.call_seq = 0
        self.api_up = True
        self.api_port: int | None = None
        self.api_host = "127.0.0.1"
        self.api_server: httpserver.HTTPServer | None = None
        self.api_app: web.Application | None = None
        self._restart_task: asyncio.Task[None] | None = None
        (state_dir / "instances").mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ calls & rules

    def record_call(self, method: str, path: str, query: str, service: str, route: str) -> CallRecord:
        self.call_seq += 1
        rec = CallRecord(self.call_seq, time.time(), method, path, query, service, route)
        self.calls.append(rec)
        return rec

    def match_rule(self, method: str, path: str, service: str) -> Rule | None:
        fired = None
        for rule in self.rules:
            if rule.consider(method, path, service, may_fire=fired is None):
                fired = rule
        return fired

    def add_rule(self, data: dict[str, Any]) -> Rule:
        self.rule_seq += 1
        rule = Rule.from_json(self.rule_seq, data)
        self.rules.append(rule)
        log.info("fault rule %s added: %s", rule.id, rule.to_json())
        return rule

    # ------------------------------------------------------------------ identity

    def identity(self) -> dict[str, Any]:
        return self.catalogue["identity"]

    def issue_token(self, method: str) -> Token:
        now = time.time()
        revoke = self.config.token_revoke_after_s
        tok = Token(
            value="gAAAAA" + secrets.token_urlsafe(160),
            issued=now,
            expires=now + self.config.token_ttl_s,
            revoke_at=None if revoke is None else now + revoke,
            method=method,
        )
        self.tokens[tok.value] = tok
        return tok

    def token_ok(self, value: str | None) -> bool:
        if not value:
            return False
        tok = self.tokens.get(value)
        return tok is not None and tok.valid(time.time())

    def revoke_token(self, value: str | None) -> None:
        if value and value in self.tokens:
            self.tokens[value].revoked = True

    def expire_all_tokens(self) -> int:
        n = 0
        for tok in self.tokens.values():
            if not tok.revoked:
                tok.revoked = True
                n += 1
        return n

    # ------------------------------------------------------------------ lookups

    def find(self, part: str, key: str) -> dict[str, Any] | None:
        for item in self.catalogue[part]:
            if item["id"] == key:
                return item
        return None

    def live_servers(self) -> list[ServerRecord]:
        return [s for s in self.servers.values() if not s.gone]

    def allocate_address(self, port: int) -> str:
        used = {s.address for s in self.live_servers() if s.address}
        for host in ipaddress.ip_network(self.config.subnet).hosts():
            addr = str(host)
            if addr == "127.0.0.1" or addr in used:
                continue
            # another process (another double, a stale server) may hold addr:port: skip it
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                # like the servers that will bind it (tornado, http.server): TIME_WAIT does not count
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((addr, port))
                except OSError:
                    continue
            return addr
        raise RuntimeError(f"no free address left in {self.config.subnet}")

    # ------------------------------------------------------------------ quota

    def quota_overs(self, flavor: dict[str, Any]) -> str | None:
        quotas = self.catalogue["quotas"]
        live = self.live_servers()
        used = {
            "instances": len(live),
            "cores": sum(int(s.flavor["vcpus"]) for s in live),
            "ram": sum(int(s.flavor["ram"]) for s in live),
        }
        req = {"instances": 1, "cores": int(flavor["vcpus"]), "ram": int(flavor["ram"])}
        overs = sorted(r for r in req if quotas.get(r, -1) >= 0 and used[r] + req[r] > quotas[r])
        if not overs:
            return None
        return quota_message(overs, req, used, quotas)

    # ------------------------------------------------------------------ servers

    def create_server(self, body: dict[str, Any], token_user: str, token_project: str,
                      build_error: dict[str, Any] | None) -> ServerRecord | tuple[int, str]:
        """Validate like Nova; return the record or (status, message)."""
        server = body.get("server") if isinstance(body, dict) else None
        if not isinstance(server, dict):
            return 400, f"Invalid input for field/attribute server. Value: {body}. 'server' is a required property"
        for req in ("name", "flavorRef"):
            if req not in server:
                return 400, (f"Invalid input for field/attribute server. Value: {_short(server)}. "
                             f"'{req}' is a required property")
        name = server["name"]
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            return 400, f"Invalid input for field/attribute name. Value: {name}. '{name}' does not match"
        metadata = server.get("metadata", {}) or {}
        if not isinstance(metadata, dict) or any(
            not isinstance(v, str) or len(k) > 255 or len(v) > 255 for k, v in metadata.items()
        ):
            return 400, f"Invalid input for field/attribute metadata. Value: {metadata}."
        user_data = server.get("user_data")
        if user_data is not None:
            if not isinstance(user_data, str):
                return 400, f"Invalid input for field/attribute user_data. Value: {user_data}."
            if len(user_data) > USER_DATA_MAX:
                return 400, (f"Invalid input for field/attribute user_data. Value: {user_data}. "
                             f"'{user_data}' is too long")
            try:
                base64.b64decode(user_data, validate=True)
            except (binascii.Error, ValueError):
                return 400, (f"Invalid input for field/attribute user_data. Value: {user_data}. "
                             f"'{user_data}' is not a 'base64'")
        flavor = self.find("flavors", str(server["flavorRef"]))
        if flavor is None:
            return 400, f"Flavor {server['flavorRef']} could not be found."
        image = self.find("images", str(server.get("imageRef", "")))
        if image is None:
            return 400, "Can not find requested image"
        key_name = server.get("key_name")
        if key_name is not None and not any(k["name"] == key_name for k in self.catalogue["keypairs"]):
            return 400, "Invalid key_name provided."
        if int(image.get("min_ram") or 0) > int(flavor["ram"]):
            return 400, "Flavor's memory is too small for requested image."
        flavor_bytes = int(flavor["disk"]) * 1024**3
        if int(flavor["disk"]) > 0:
            min_disk = int(image.get("min_disk") or 0)
            # without min_disk Nova compares the flavor with the image *file* size (see recordings 019)
            needed = min_disk * 1024**3 if min_disk else int(image.get("size") or 0)
            if flavor_bytes < needed:
                return 400, (f"Flavor's disk is too small for requested image. Flavor disk is {flavor_bytes} "
                             f"bytes, image is {needed} bytes.")
        networks_req = server.get("networks")
        networks: list[dict[str, Any]] = []
        if networks_req in (None, "auto"):
            if len(self.catalogue["networks"]) > 1:
                return 409, "Multiple possible networks found, use a Network ID to be more specific."
            networks = list(self.catalogue["networks"][:1])
        elif networks_req != "none":
            if not isinstance(networks_req, list):
                return 400, f"Invalid input for field/attribute networks. Value: {networks_req}."
            for n in networks_req:
                nid = n.get("uuid") if isinstance(n, dict) else None
                net = self.find("networks", str(nid))
                if net is None:
                    return 400, f"Network {nid} could not be found."
                networks.append(net)
        sgs = [sg.get("name") for sg in server.get("security_groups", []) or [] if isinstance(sg, dict)]
        sgs = sgs or ["default"]
        for sg in sgs:
            if not any(g["name"] == sg or g["id"] == sg for g in self.catalogue["security_groups"]):
                return 400, f"Security group {sg} not found."
        over = self.quota_overs(flavor)
        if over:
            return 403, over
        config_drive = server.get("config_drive", "")
        if isinstance(config_drive, bool):
            config_drive = str(config_drive)
        now = time.time()
        rec = ServerRecord(
            id=str(uuid.uuid4()),
            name=name,
            image_id=image["id"],
            flavor=flavor,
            networks=networks,
            metadata=dict(metadata),
            user_data=user_data,
            config_drive=str(config_drive or ""),
            key_name=key_name,
            security_groups=sgs,
            admin_pass=secrets.token_urlsafe(9)[:12],
            tenant_id=token_project,
            user_id=token_user,
            created=now,
            updated=now,
            no_run=self.config.no_run or bool(
                self.config.no_run_names and re.search(self.config.no_run_names, name)
            ),
        )
        rec.mac = "fa:16:3e:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        rec.planned_fault = self._planned_fault(rec, image, flavor, build_error)
        try:
            rec.plan = build_plan(decode_user_data(user_data), image_users=tuple(image.get("users", ())))
        except (binascii.Error, ValueError, OSError, EOFError) as exc:
            rec.plan = BootPlan(reason=f"user-data could not be decoded: {exc}")
        self.servers[rec.id] = rec
        rec.task = asyncio.get_running_loop().create_task(self._lifecycle(rec))
        log.info("server %s (%s) created: flavor %s image %s", rec.id, rec.name, flavor["name"], image["name"])
        return rec

    def _planned_fault(self, rec: ServerRecord, image: dict[str, Any], flavor: dict[str, Any],
                       build_error: dict[str, Any] | None) -> dict[str, Any] | None:
        host = self.catalogue["host"]
        novalidhost = {"phase": "scheduling", "code": 500, "message": "No valid host was found. ",
                       "in_list": False}
        if build_error is not None:
            kind = build_error.get("fault", "novalidhost")
            if kind == "novalidhost":
                fault = dict(novalidhost)
            elif kind == "disk":
                fault = {"phase": "spawning", "code": 500, "in_list": True,
                         "message": (f"Build of instance {rec.id} aborted: Flavor's disk is too small for "
                                     f"requested image. Flavor disk is {int(flavor['disk']) * 1024**3} bytes, "
                                     f"image is {int(image.get('virtual_size') or 0)} bytes.")}
            elif isinstance(kind, dict):
                fault = {"phase": "spawning", "code": int(kind.get("code", 500)),
                         "message": str(kind.get("message", "Unknown error")), "in_list": True}
            else:
                fault = {"phase": "spawning", "code": 500, "message": str(kind), "in_list": True}
            if "phase" in build_error:
                fault["phase"] = build_error["phase"]
            return fault
        if int(flavor["ram"]) > int(host["ram"]) or int(flavor["vcpus"]) > int(host["vcpus"]):
            return novalidhost
        virtual = int(image.get("virtual_size") or 0)
        if int(flavor["disk"]) > 0 and int(flavor["disk"]) * 1024**3 < virtual:
            return {"phase": "spawning", "code": 500, "in_list": True,
                    "message": (f"Build of instance {rec.id} aborted: Flavor's disk is too small for requested "
                                f"image. Flavor disk is {int(flavor['disk']) * 1024**3} bytes, image is "
                                f"{virtual} bytes.")}
        return None

    def _set_error(self, rec: ServerRecord, fault: dict[str, Any]) -> None:
        now = time.time()
        rec.phase = "error"
        rec.updated = now
        rec.fault = {"code": fault.get("code", 500), "created": iso_z(now), "message": fault["message"]}
        rec.fault_in_list = bool(fault.get("in_list", True))
        log.info("server %s went to ERROR: %s", rec.id, fault["message"])

    async def _lifecycle(self, rec: ServerRecord) -> None:
        try:
            await asyncio.sleep(self.config.scheduling_s)
            if rec.planned_fault and rec.planned_fault["phase"] == "scheduling":
                self._set_error(rec, rec.planned_fault)
                return
            rec.phase = "spawning"
            rec.updated = time.time()
            await asyncio.sleep(self.config.spawning_s)
            if rec.planned_fault:
                self._set_error(rec, rec.planned_fault)
                return
            assert rec.plan is not None
            port = service_port(rec.plan, self.config.standin_port)
            rec.address = self.allocate_address(port)
            now = time.time()
            rec.phase, rec.launched, rec.updated = "active", now, now
            log.info("server %s ACTIVE at %s", rec.id, rec.address)
            if self.config.boot_delay_s:
                await asyncio.sleep(self.config.boot_delay_s)
            rec.host = InstanceHost(
                instance_id=rec.id,
                address=rec.address,
                directory=self.state_dir / "instances" / rec.id,
                plan=rec.plan,
                no_run=rec.no_run,
                standin_port=self.config.standin_port,
                on_pids_changed=self._write_pidfile,
            )
            await rec.host.boot()
            (rec.host.directory / "boot.json").write_text(json.dumps(rec.host.report(), indent=1))
            self._write_pidfile()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("server %s: boot failed in the double", rec.id)
            if rec.host is not None:
                rec.host.status, rec.host.reason = "not-started", f"double error: {exc}"

    def delete_server(self, rec: ServerRecord) -> None:
        if rec.deleting:
            return
        rec.deleting = True
        rec.deleted_at = time.time()
        if rec.task is not None and not rec.task.done():
            rec.task.cancel()
        asyncio.get_running_loop().create_task(self._finish_delete(rec))

    async def _finish_delete(self, rec: ServerRecord) -> None:
        started = time.monotonic()
        if rec.host is not None:
            await rec.host.stop(self.config.kill_timeout_s)
        await asyncio.sleep(max(0.0, self.config.delete_linger_s - (time.monotonic() - started)))
        rec.gone = True
        self._write_pidfile()
        log.info("server %s deleted", rec.id)

    def _write_pidfile(self) -> None:
        pids = [p for s in self.servers.values() if s.host and not s.gone for p in s.host.pids()]
        (self.state_dir / "instance-pids").write_text("".join(f"{p}\n" for p in pids))

    async def shutdown(self) -> None:
        """Kill every instance process (used on exit and by reset)."""
        hosts = [s.host for s in self.servers.values() if s.host is not None]
        for s in self.servers.values():
            if s.task is not None and not s.task.done():
                s.task.cancel()
        await asyncio.gather(*(h.stop(self.config.kill_timeout_s) for h in hosts), return_exceptions=True)
        self._write_pidfile()

    async def reset(self, config: bool = False, catalogue: bool = False) -> None:
        await self.shutdown()
        for s in self.servers.values():
            s.gone = True
        self.servers.clear()
        self.rules.clear()
        self.calls.clear()
        self.tokens.clear()
        if config:
            self.config = copy.deepcopy(self.initial_config)
        if catalogue:
            self.catalogue = catalogue_mod.preset("default")
        self._write_pidfile()
        if not self.api_up:
            await self.start_api()

    # ------------------------------------------------------------------ API up/down

    def bind_api(self, host: str, port: int) -> int:
        assert self.api_app is not None
        sockets = netutil.bind_sockets(port, address=host)
        self.api_server = httpserver.HTTPServer(self.api_app, xheaders=False)
        self.api_server.add_sockets(sockets)
        self.api_host = host
        self.api_port = sockets[0].getsockname()[1]
        self.api_up = True
        return self.api_port

    async def stop_api(self, for_s: float | None = None) -> None:
        if self.api_up and self.api_server is not None:
            server = self.api_server
            server.stop()
            self.api_up = False
            # drop kept-alive client connections at once (a real API process that dies takes them with it):
            # close_all_connections alone may still be waiting when the next request arrives on one of them
            for conn in list(getattr(server, "_connections", ())):
                with contextlib.suppress(Exception):
                    conn.stream.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.close_all_connections(), 5.0)
            log.info("API stopped (connection refused)%s", f" for {for_s}s" if for_s else "")
        if for_s:
            if self._restart_task is not None:
                self._restart_task.cancel()
            self._restart_task = asyncio.get_running_loop().create_task(self._restart_after(for_s))

    async def _restart_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.start_api()

    async def start_api(self) -> None:
        if self.api_up:
            return
        assert self.api_port is not None
        deadline = time.monotonic() + 10
        while True:
            try:
                self.bind_api(self.api_host, self.api_port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        log.info("API started again on %s:%s", self.api_host, self.api_port)


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) < 300 else text[:300] + "..."


def quota_message(overs: list[str], req: dict[str, int], used: dict[str, int], quotas: dict[str, int]) -> str:
    names = ", ".join(overs)
    return (
        f"Quota exceeded for {names}: Requested {', '.join(str(req[o]) for o in overs)}, but already used "
        f"{', '.join(str(used[o]) for o in overs)} of {', '.join(str(quotas[o]) for o in overs)} {names}"
    )


# ======================================================================================================
# HTTP
# ======================================================================================================


class BaseHandler(web.RequestHandler):
    service = "identity"
    route = ""
    needs_token = True

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
            if status == 404 and message is None and m and m.group(1) != "detail":
                message = f"Instance {m.group(1)} could not be found."
            self.send_error_body(status, message, effect.get("retry_after"))
        elif kind == "rate_limit":
            self.send_error_body(int(effect.get("status", 413)), effect.get("message"),
                                 float(effect.get("retry_after", 1)))
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
        elif kind == "api_down":
            self.abort_connection(rst=True)
            asyncio.get_running_loop().create_task(self.double.stop_api(float(effect.get("seconds", 5))))

    def forced_quota_message(self, effect: dict[str, Any]) -> str:
        resource = effect.get("resource", "instances")
        quotas = self.double.catalogue["quotas"]
        live = self.double.live_servers()
        used = {"instances": len(live), "cores": sum(int(s.flavor["vcpus"]) for s in live),
                "ram": sum(int(s.flavor["ram"]) for s in live)}
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


# ---------------------------------------------------------------------------------------- Keystone


class KeystoneTokensHandler(BaseHandler):
    service = "identity"
    route = "/v3/auth/tokens"
    needs_token = False

    def service_headers(self) -> None:
        self.set_header("Vary", "X-Auth-Token")
        self.set_header("x-openstack-request-id", self.req_id)

    def catalog(self) -> list[dict[str, Any]]:
        base = self.base_url
        region = self.double.identity()["region"]
        services = [
            ("compute", "nova", f"{base}/v2.1"),
            ("image", "glance", base),
            ("network", "neutron", base),
            ("identity", "keystone", f"{base}/v3/"),
        ]
        out = []
        for stype, name, url in services:
            endpoints = [
                {"id": uuid.uuid5(uuid.NAMESPACE_URL, f"{stype}/{iface}").hex, "interface": iface,
                 "region_id": region, "url": url, "region": region}
                for iface in ("public", "internal", "admin")
            ]
            out.append({"endpoints": endpoints, "id": uuid.uuid5(uuid.NAMESPACE_URL, stype).hex,
                        "type": stype, "name": name})
        return out

    def token_body(self, tok: Token, methods: list[str], appcred: dict[str, Any] | None) -> dict[str, Any]:
        ident = self.double.identity()
        domain = ident["domain"]
        body: dict[str, Any] = {
            "methods": methods,
            "user": {"domain": dict(domain), "id": ident["user"]["id"], "name": ident["user"]["name"],
                     "password_expires_at": None},
            "audit_ids": [base64.urlsafe_b64encode(hashlib.sha256(tok.value.encode()).digest()[:16])
                          .decode().rstrip("=")[:22]],
            "expires_at": iso_micro(tok.expires)[:-6] + "000000Z",
            "issued_at": iso_micro(tok.issued)[:-6] + "000000Z",
            "project": {"domain": dict(domain), "id": ident["project"]["id"], "name": ident["project"]["name"]},
            "is_domain": False,
            "roles": copy.deepcopy(ident["roles"]),
            "catalog": self.catalog(),
        }
        if appcred is not None:
            body["application_credential"] = {"id": appcred["id"], "name": appcred["name"], "restricted": True}
        return {"token": body}

    def _user_matches(self, user: Any) -> bool:
        ident = self.double.identity()
        if not isinstance(user, dict):
            return False
        if "id" in user:
            return bool(user["id"] == ident["user"]["id"])
        dom = user.get("domain") or {}
        dom_ok = dom.get("id") == ident["domain"]["id"] or _same_name(dom.get("name"), ident["domain"]["name"])
        return bool(user.get("name") == ident["user"]["name"] and dom_ok)

    def authenticate(self, body: Any) -> tuple[list[str], dict[str, Any] | None] | None:
        ident = self.double.identity()
        try:
            identity = body["auth"]["identity"]
            methods = identity["methods"]
        except (KeyError, TypeError):
            return None
        if methods == ["password"]:
            user = identity.get("password", {}).get("user")
            if not self._user_matches(user) or user.get("password") != ident["user"]["password"]:
                return None
            scope = body["auth"].get("scope")
            if scope is not None:
                project = scope.get("project") if isinstance(scope, dict) else None
                if project is None:
                    if isinstance(scope, dict) and "domain" in scope:
                        return methods, None  # domain scope: served like the project (approximation)
                    return None
                if "id" in project:
                    if project["id"] != ident["project"]["id"]:
                        return None
                else:
                    dom = project.get("domain") or {}
                    dom_ok = dom.get("id") == ident["domain"]["id"] or _same_name(
                        dom.get("name"), ident["domain"]["name"]
                    )
                    if project.get("name") != ident["project"]["name"] or not dom_ok:
                        return None
            return methods, None
        if methods == ["application_credential"]:
            ac = identity.get("application_credential") or {}
            for cred in ident["application_credentials"]:
                if ac.get("secret") != cred["secret"]:
                    continue
                if "id" in ac and ac["id"] == cred["id"]:
                    return methods, cred
                if "name" in ac and ac["name"] == cred["name"] and self._user_matches(ac.get("user")):
                    return methods, cred
            return None
        return None

    async def post(self) -> None:
        body = self.json_body()
        if not isinstance(body, dict) or "auth" not in body:
            self.send_error_body(400)
            return
        result = self.authenticate(body)
        if result is None:
            self.send_error_body(401)
            return
        methods, appcred = result
        tok = self.double.issue_token(methods[0])
        self.set_header("X-Subject-Token", tok.value)
        self.send_json(201, self.token_body(tok, methods, appcred))

    async def get(self) -> None:
        if not self.double.token_ok(self.request.headers.get("X-Auth-Token")):
            self.send_error_body(401)
            return
        subject = self.request.headers.get("X-Subject-Token", "")
        tok = self.double.tokens.get(subject)
        if tok is None or not tok.valid(time.time()):
            self.send_error_body(404, f"Could not find token: {subject}.")
            return
        self.set_header("X-Subject-Token", subject)
        self.send_json(200, self.token_body(tok, [tok.method], None))

    async def prepare(self) -> None:
        await super().prepare()


# ---------------------------------------------------------------------------------------- Nova


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
        building = s.phase in ("scheduling", "spawning")
        on_host = s.phase in ("spawning", "active")
        status = {"scheduling": "BUILD", "spawning": "BUILD", "active": "ACTIVE", "error": "ERROR"}[s.phase]
        task_state = {"scheduling": "scheduling", "spawning": "spawning"}.get(s.phase)
        if s.deleting:
            task_state = "deleting"
        addresses: dict[str, Any] = {}
        if s.phase == "active" and s.address:
            for i, net in enumerate(s.networks):
                if i == 0:
                    addresses[net["name"]] = [{"version": 4, "addr": s.address, "OS-EXT-IPS:type": "fixed",
                                               "OS-EXT-IPS-MAC:mac_addr": s.mac}]
        view: dict[str, Any] = {
            "id": s.id,
            "name": s.name,
            "status": status,
            "tenant_id": s.tenant_id,
            "user_id": s.user_id,
            "metadata": dict(s.metadata),
            "hostId": hashlib.sha224((s.tenant_id + "osdouble-compute").encode()).hexdigest() if on_host else "",
            "image": {"id": s.image_id,
                      "links": [{"rel": "bookmark", "href": f"{self.base_url}/images/{s.image_id}"}]},
            "flavor": {"id": s.flavor["id"],
                       "links": [{"rel": "bookmark", "href": f"{self.base_url}/flavors/{s.flavor['id']}"}]},
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
        view.update({
            "OS-EXT-AZ:availability_zone": "nova" if on_host else "",
            "config_drive": s.config_drive,
            "key_name": s.key_name,
            "OS-SRV-USG:launched_at": iso_micro(s.launched) if s.launched else None,
            "OS-SRV-USG:terminated_at": None,
        })
        if on_host:
            view["security_groups"] = [{"name": n} for n in s.security_groups]
        view.update({
            "OS-EXT-STS:task_state": task_state,
            "OS-EXT-STS:vm_state": "building" if building else ("active" if s.phase == "active" else "error"),
            "OS-EXT-STS:power_state": 1 if s.phase == "active" else 0,
            "os-extended-volumes:volumes_attached": [],
        })
        return view

    def get_server(self, server_id: str) -> ServerRecord | None:
        s = self.double.servers.get(server_id)
        if s is None or s.gone:
            self.nova_error(404, f"Instance {server_id} could not be found.")
            return None
        return s


class FlavorsHandler(NovaHandler):
    route = "/v2.1/flavors/detail"

    def flavor_view(self, f: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f["id"], "name": f["name"], "ram": f["ram"], "disk": f["disk"], "swap": f.get("swap", ""),
            "OS-FLV-EXT-DATA:ephemeral": f.get("ephemeral", 0), "OS-FLV-DISABLED:disabled": f.get("disabled", False),
            "vcpus": f["vcpus"], "os-flavor-access:is_public": f.get("is_public", True),
            "rxtx_factor": f.get("rxtx_factor", 1.0), "links": self.links("flavors", f["id"]),
        }

    async def get(self, flavor_id: str | None = None) -> None:
        if flavor_id in (None, "detail"):
            self.send_json(200, {"flavors": [self.flavor_view(f) for f in self.double.catalogue["flavors"]]})
            return
        f = self.double.find("flavors", flavor_id)
        if f is None:
            self.nova_error(404, f"Flavor {flavor_id} could not be found.")
            return
        self.send_json(200, {"flavor": self.flavor_view(f)})


class NovaImagesHandler(NovaHandler):
    route = "/v2.1/images/detail"

    def image_view(self, img: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": img["id"], "name": img["name"], "minRam": img.get("min_ram", 0), "minDisk": img.get("min_disk", 0),
            "metadata": dict(img.get("properties", {})), "created": img["created_at"], "updated": img["updated_at"],
            "status": str(img.get("status", "active")).upper(), "progress": 100,
            "OS-EXT-IMG-SIZE:size": img.get("size"),
            "links": [*self.links("images", img["id"]),
                      {"rel": "alternate", "type": "application/vnd.openstack.image",
                       "href": f"{self.base_url}//images/{img['id']}"}],
        }

    async def get(self, image_id: str | None = None) -> None:
        if image_id in (None, "detail"):
            self.send_json(200, {"images": [self.image_view(i) for i in self.double.catalogue["images"]]})
            return
        img = self.double.find("images", image_id)
        if img is None:
            self.nova_error(404, "Image not found.")
            return
        self.send_json(200, {"image": self.image_view(img)})


class NovaNetworksHandler(NovaHandler):
    route = "/v2.1/os-networks"

    async def get(self) -> None:
        nets = [
            {"id": n["id"], "cidr": None, "netmask": None, "gateway": None, "broadcast": None, "dns1": None,
             "dns2": None, "cidr_v6": None, "gateway_v6": None, "label": n["name"], "netmask_v6": None}
            for n in self.double.catalogue["networks"]
        ]
        self.send_json(200, {"networks": nets})


class NovaSecurityGroupsHandler(NovaHandler):
    route = "/v2.1/os-security-groups"

    async def get(self) -> None:
        _, project = self.token_identity()
        groups = [{"id": g["id"], "name": g["name"], "description": g.get("description", ""),
                   "tenant_id": project, "rules": []} for g in self.double.catalogue["security_groups"]]
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
        self.send_json(202, {"server": {
            "id": s.id, "links": self.links("servers", s.id), "OS-DCF:diskConfig": "MANUAL",
            "security_groups": [{"name": n} for n in s.security_groups], "adminPass": s.admin_pass,
        }})

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
        servers = self.filtered()
        marker = self.get_query_argument("marker", None)
        if marker is not None:
            ids = [s.id for s in servers]
            if marker not in ids:
                self.nova_error(400, f"marker [{marker}] not found")
                return
            servers = servers[ids.index(marker) + 1:]
        limit_arg = self.get_query_argument("limit", None)
        limit = min(int(limit_arg), 1000) if limit_arg and limit_arg.isdigit() else 1000
        page = servers[:limit]
        if detail:
            body: dict[str, Any] = {"servers": [self.server_view(s, in_list=True) for s in page]}
        else:
            body = {"servers": [{"id": s.id, "links": self.links("servers", s.id), "name": s.name} for s in page]}
        if len(page) == limit and len(servers) > limit:
            query = f"limit={limit}&marker={page[-1].id}"
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

    async def delete(self, server_id: str) -> None:
        s = self.get_server(server_id)
        if s is None:
            return
        self.double.delete_server(s)
        self.set_status(204)
        self.service_headers()


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


class NovaNotFoundHandler(NovaHandler):
    route = "/v2.1/*"

    async def get(self, *_: str) -> None:
        self.nova_error(404, "The resource could not be found.")

    post = put = delete = get


# ---------------------------------------------------------------------------------------- Glance


class GlanceImagesHandler(BaseHandler):
    service = "image"
    route = "/v2/images"

    def image_view(self, img: dict[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = dict(img.get("properties", {}))
        for k, v in img.items():
            if k not in ("properties", "users"):
                view[k] = v
        view.setdefault("protected", False)
        view.setdefault("os_hidden", False)
        view.setdefault("tags", [])
        view["self"] = f"/v2/images/{img['id']}"
        view["file"] = f"/v2/images/{img['id']}/file"
        view["schema"] = "/v2/schemas/image"
        return view

    async def get(self, image_id: str | None = None) -> None:
        images = self.double.catalogue["images"]
        if image_id is not None:
            img = self.double.find("images", image_id)
            if img is None:
                self.send_error_body(404, f"No image found with ID {image_id}")
                return
            self.send_json(200, self.image_view(img))
            return
        marker = self.get_query_argument("marker", None)
        if marker is not None:
            ids = [i["id"] for i in images]
            images = images[ids.index(marker) + 1:] if marker in ids else []
        limit_arg = self.get_query_argument("limit", "25")
        limit = int(limit_arg) if limit_arg.isdigit() else 25
        page = images[:limit]
        body: dict[str, Any] = {"images": [self.image_view(i) for i in page], "schema": "/v2/schemas/images",
                                "first": "/v2/images"}
        if len(images) > limit:
            body["next"] = f"/v2/images?marker={page[-1]['id']}"
        self.send_json(200, body)


# ---------------------------------------------------------------------------------------- Neutron


class NeutronHandler(BaseHandler):
    service = "network"


class NeutronNetworksHandler(NeutronHandler):
    route = "/v2.0/networks"

    def network_view(self, n: dict[str, Any]) -> dict[str, Any]:
        tenant = n.get("tenant_id", "03a8c754e2e3470c933adc5bb5e102b4")
        return {
            "id": n["id"], "name": n["name"], "tenant_id": tenant, "admin_state_up": True, "mtu": n.get("mtu", 1500),
            "status": n.get("status", "ACTIVE"), "subnets": list(n.get("subnets", [])), "shared": n.get("shared", True),
            "availability_zone_hints": [], "availability_zones": ["nova"], "ipv4_address_scope": None,
            "ipv6_address_scope": None, "router:external": False, "description": n.get("description", ""),
            "port_security_enabled": True, "tags": [], "created_at": n.get("created_at", "2026-11-25T20:18:34Z"),
            "updated_at": n.get("updated_at", "2026-11-25T20:18:35Z"), "revision_number": 2, "project_id": tenant,
        }

    async def get(self, network_id: str | None = None) -> None:
        if network_id is None:
            self.send_json(200, {"networks": [self.network_view(n) for n in self.double.catalogue["networks"]]})
            return
        n = self.double.find("networks", network_id)
        if n is None:
            self.send_error_body(404, f"Network {network_id} could not be found.")
            return
        self.send_json(200, {"network": self.network_view(n)})


class NeutronSecurityGroupsHandler(NeutronHandler):
    route = "/v2.0/security-groups"

    async def get(self) -> None:
        _, project = self.token_identity()
        groups = [
            {"id": g["id"], "name": g["name"], "description": g.get("description", ""), "tenant_id": project,
             "project_id": project, "security_group_rules": [], "tags": [], "stateful": True,
             "created_at": "2026-11-25T20:18:34Z", "updated_at": "2026-11-25T20:18:34Z", "revision_number": 1}
            for g in self.double.catalogue["security_groups"]
        ]
        self.send_json(200, {"security_groups": groups})


class KeystoneVersionHandler(BaseHandler):
    """Version discovery (keystoneauth / openstacksdk ask for it; libcloud does not)."""

    service = "identity"
    route = "/v3"
    needs_token = False

    def version(self) -> dict[str, Any]:
        return {
            "id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{self.base_url}/v3/"}],
            "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
        }

    async def get(self, root: str = "") -> None:
        if self.request.path.rstrip("/") == "":
            self.send_json(300, {"versions": {"values": [self.version()]}})
        else:
            self.send_json(200, {"version": self.version()})


class ApiNotFoundHandler(BaseHandler):
    needs_token = False
    route = "*"

    async def prepare(self) -> None:
        path = self.request.path
        self.service = ("compute" if path.startswith("/v2.1") else "network" if path.startswith("/v2.0")
                        else "image" if path.startswith("/v2/") else "identity")
        await super().prepare()

    async def get(self, *_: str) -> None:
        self.send_error_body(404, "The resource could not be found.")

    post = put = delete = patch = head = get


# ---------------------------------------------------------------------------------------- control


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

    def server_summary(self, s: ServerRecord) -> dict[str, Any]:
        host = s.host
        return {
            "id": s.id, "name": s.name, "phase": s.phase, "deleting": s.deleting, "gone": s.gone,
            "status": "DELETED" if s.gone else
            {"scheduling": "BUILD", "spawning": "BUILD", "active": "ACTIVE", "error": "ERROR"}[s.phase],
            "address": s.address, "metadata": s.metadata, "flavor": s.flavor["name"], "image_id": s.image_id,
            "fault": s.fault, "created": s.created, "deleted_at": s.deleted_at, "no_run": s.no_run,
            "boot_status": host.status if host else None, "boot_reason": host.reason if host else None,
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
            if part in ("images", "flavors", "networks", "security_groups", "keypairs"):
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
        deleted = self.get_query_argument("deleted", "0") in ("1", "true", "yes")
        servers = [s for s in self.double.servers.values() if deleted or not s.gone]
        self.reply([self.server_summary(s) for s in sorted(servers, key=lambda s: s.created)])


class CtlServer(ControlHandler):
    def get_rec(self, server_id: str) -> ServerRecord:
        s = self.double.servers.get(server_id)
        if s is None:
            raise web.HTTPError(404, f"no server {server_id}")
        return s

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

    def post(self, server_id: str, what: str | None = None) -> None:
        s = self.get_rec(server_id)
        data = self.body()
        if what == "error":
            fault = {"code": int(data.get("code", 500)), "message": data.get("message", "No valid host was found. ")}
            if s.task is not None and not s.task.done():
                s.task.cancel()
            self.double._set_error(s, fault)
            if s.host is not None and data.get("kill", True):
                asyncio.get_running_loop().create_task(s.host.stop(self.double.config.kill_timeout_s))
            self.reply(self.server_summary(s))
        elif what == "kill":
            sig = getattr(signal, str(data.get("signal", "SIGKILL")), None)
            if not isinstance(sig, signal.Signals):
                raise web.HTTPError(400, f"unknown signal {data.get('signal')!r}")
            killed = s.host.kill_process(sig) if s.host else []
            self.reply({"killed": killed})
        else:
            raise web.HTTPError(404)


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


def control_routes(double: Double) -> list[Any]:
    kw = {"double": double}
    return [
        (r"/_double/health", CtlHealth, kw),
        (r"/_double/config", CtlConfig, kw),
        (r"/_double/catalogue", CtlCatalogue, kw),
        (r"/_double/faults", CtlFaults, kw),
        (r"/_double/faults/(\d+)", CtlFault, kw),
        (r"/_double/servers", CtlServers, kw),
        (r"/_double/servers/([^/]+)", CtlServer, kw),
        (r"/_double/servers/([^/]+)/(boot|env|log|user_data|error|kill)", CtlServer, kw),
        (r"/_double/calls", CtlCalls, kw),
        (r"/_double/calls/counts", CtlCounts, kw),
        (r"/_double/tokens/(\w+)", CtlTokens, kw),
        (r"/_double/api/(\w+)", CtlApi, kw),
        (r"/_double/reset", CtlReset, kw),
    ]


def api_routes(double: Double) -> list[Any]:
    kw = {"double": double}
    return [
        *control_routes(double),
        (r"/v3/auth/tokens", KeystoneTokensHandler, kw),
        (r"/(v3/?)?", KeystoneVersionHandler, kw),
        (r"/v2\.1/flavors/(detail)", FlavorsHandler, kw),
        (r"/v2\.1/flavors/([^/]+)", type("FlavorHandler", (FlavorsHandler,), {"route": "/v2.1/flavors/{id}"}), kw),
        (r"/v2\.1/images/(detail)", NovaImagesHandler, kw),
        (r"/v2\.1/images/([^/]+)", type("NovaImageHandler", (NovaImagesHandler,), {"route": "/v2.1/images/{id}"}),
         kw),
        (r"/v2\.1/os-networks", NovaNetworksHandler, kw),
        (r"/v2\.1/os-security-groups", NovaSecurityGroupsHandler, kw),
        (r"/v2\.1/os-keypairs", KeypairsHandler, kw),
        (r"/v2\.1/os-keypairs/([^/]+)",
         type("KeypairHandler", (KeypairsHandler,), {"route": "/v2.1/os-keypairs/{name}"}), kw),
        (r"/v2\.1/servers", ServersHandler, kw),
        (r"/v2\.1/servers/(detail)", ServersDetailHandler, kw),
        (r"/v2\.1/servers/([^/]+)", ServerHandler, kw),
        (r"/v2\.1/servers/([^/]+)/metadata", ServerMetadataHandler, kw),
        (r"/v2\.1/(.*)", NovaNotFoundHandler, kw),
        (r"/v2/images", GlanceImagesHandler, kw),
        (r"/v2/images/([^/]+)", type("GlanceImageHandler", (GlanceImagesHandler,), {"route": "/v2/images/{id}"}), kw),
        (r"/v2\.0/networks", NeutronNetworksHandler, kw),
        (r"/v2\.0/networks/([^/]+)",
         type("NeutronNetworkHandler", (NeutronNetworksHandler,), {"route": "/v2.0/networks/{id}"}), kw),
        (r"/v2\.0/security-groups", NeutronSecurityGroupsHandler, kw),
        (r"/(.*)", ApiNotFoundHandler, kw),
    ]


async def serve(
    config: Config, state_dir: Path, host: str, port: int, control_port: int | None,
    catalogue: dict[str, Any] | None = None,
) -> tuple[Double, int, int | None, httpserver.HTTPServer | None]:
    """Start the double in the running loop; return (double, api port, control port, control server)."""
    double = Double(config, state_dir, catalogue or catalogue_mod.preset("default"))
    double.api_app = web.Application(api_routes(double))
    api_port = double.bind_api(host, port)
    ctl_port = None
    ctl_server = None
    if control_port is not None:
        ctl_app = web.Application([*control_routes(double), (r"/(.*)", ApiNotFoundHandler, {"double": double})])
        sockets = netutil.bind_sockets(control_port, address=host)
        ctl_server = httpserver.HTTPServer(ctl_app)
        ctl_server.add_sockets(sockets)
        ctl_port = sockets[0].getsockname()[1]
    log.info("OpenStack API double on http://%s:%s (state %s)", host, api_port, state_dir)
    return double, api_port, ctl_port, ctl_server

