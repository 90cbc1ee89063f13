"""State of the OpenStack API double, independent of HTTP: the fake compute host's lifecycle of a server, tokens,
calls and fault rules. Beside it: its records (``records.py``: configuration, servers, tokens, calls), a server's
power and shelve actions
(``serveractions.py``), volumes and their timed status changes (``volumestate.py``), Neutron ports
(``ports.py``), the API port going down and up (``apiport.py``)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import ipaddress
import json
import logging
import re
import secrets
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from tornado import httpserver, web

from . import catalogue as catalogue_mod
from .apiport import ApiPort
from .cloudconfig import BootPlan, build_plan, decode_user_data
from .faults import Rule
from .instances import InstanceHost, service_port
from .ports import PortRecord
from .records import CallRecord, Config, ServerRecord, Token, iso_z
from .serveractions import ServerActions
from .volumestate import VolumeRecord, VolumeState

log = logging.getLogger("osdouble")

USER_DATA_MAX = 65535


class Double(ServerActions, VolumeState, ApiPort):
    """All state of the double, independent of HTTP."""

    def __init__(self, config: Config, state_dir: Path, catalogue: dict[str, Any]):
        self.config = config
        self.initial_config = copy.deepcopy(config)
        self.state_dir = state_dir
        self.catalogue = catalogue
        self.servers: dict[str, ServerRecord] = {}
        self.volumes: dict[str, VolumeRecord] = {}
        self.ports: dict[str, PortRecord] = {}
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
        self.control_url: str | None = None  # what a fake VM's systemctl and useradd report to
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

    def allocate_address(self, port: int | None) -> str:
        """The lowest free ``127.0.0.N`` (servers' and ports' addresses are taken); with a service ``port``,
        one whose ``addr:port`` no other process holds (a Neutron port's address is chosen before its
        server says which port it serves on: no probe)."""
        used = {s.address for s in self.live_servers() if s.address}
        used |= {p.address for p in self.ports.values() if not p.gone}
        for host in ipaddress.ip_network(self.config.subnet).hosts():
            addr = str(host)
            if addr == "127.0.0.1" or addr in used:
                continue
            if port is None:
                return addr
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

    def create_server(
        self, body: dict[str, Any], token_user: str, token_project: str, build_error: dict[str, Any] | None
    ) -> ServerRecord | tuple[int, str]:
        """Validate like Nova; return the record or (status, message)."""
        server = body.get("server") if isinstance(body, dict) else None
        if not isinstance(server, dict):
            return 400, f"Invalid input for field/attribute server. Value: {body}. 'server' is a required property"
        for req in ("name", "flavorRef"):
            if req not in server:
                return 400, (
                    f"Invalid input for field/attribute server. Value: {short(server)}. '{req}' is a required property"
                )
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
                return 400, (
                    f"Invalid input for field/attribute user_data. Value: {user_data}. '{user_data}' is too long"
                )
            try:
                base64.b64decode(user_data, validate=True)
            except (binascii.Error, ValueError):
                return 400, (
                    f"Invalid input for field/attribute user_data. Value: {user_data}. '{user_data}' is not a 'base64'"
                )
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
                return 400, (
                    f"Flavor's disk is too small for requested image. Flavor disk is {flavor_bytes} "
                    f"bytes, image is {needed} bytes."
                )
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
                if isinstance(n, dict) and "port" in n:
                    port = self.ports.get(str(n["port"]))
                    if port is None or port.gone:
                        return 400, f"Port id {n['port']} could not be found."
                    if port.device_id:
                        return 409, f"Port {port.id} is still in use."
                    networks.append(port.network)
                    continue
                nid = n.get("uuid") if isinstance(n, dict) else None
                net = self.find("networks", str(nid))
                if net is None:
                    return 400, f"Network {nid} could not be found."
                networks.append(net)
        port_ids = [str(n["port"]) for n in networks_req or () if isinstance(n, dict) and "port" in n]
        sgs = [sg.get("name") for sg in server.get("security_groups", []) or [] if isinstance(sg, dict)]
        sgs = sgs or ["default"]
        for sg in sgs:
            if not any(g["name"] == sg or g["id"] == sg for g in self.catalogue["security_groups"]):
                return 400, f"Security group {sg} not found."
        over = self.quota_overs(flavor)
        if over:
            return 403, over
        volumes = self.boot_volumes(server.get("block_device_mapping_v2"))
        if isinstance(volumes, tuple):
            return volumes
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
            no_run=self.config.no_run or bool(self.config.no_run_names and re.search(self.config.no_run_names, name)),
        )
        rec.mac = "fa:16:3e:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        if port_ids:  # the server takes the port's address, MAC and security groups
            port = self.ports[port_ids[0]]
            rec.port_id, rec.mac = port.id, port.mac
            rec.security_groups = [g["name"] for g in self.catalogue["security_groups"]
                                   if g["id"] in port.security_groups]  # fmt: skip
            port.bind(rec.id)
        rec.planned_fault = self._planned_fault(rec, image, flavor, build_error)
        try:
            rec.plan = build_plan(decode_user_data(user_data), image_users=tuple(image.get("users", ())))
        except (binascii.Error, ValueError, OSError, EOFError) as exc:
            rec.plan = BootPlan(reason=f"user-data could not be decoded: {exc}")
        self.servers[rec.id] = rec
        for vol in volumes:  # reserved for the server now, in-use once it runs
            vol.attachment = {
                "server_id": rec.id,
                "attachment_id": str(uuid.uuid4()),
                "device": f"/dev/vd{'bcdefghijklmnop'[len(self.attached_volumes(rec.id))]}",
                "attached_at": now,
            }
            self.volume_transition(vol, "attaching", "in-use", self.config.scheduling_s + self.config.spawning_s + 60)
        rec.task = asyncio.get_running_loop().create_task(self._lifecycle(rec))
        log.info("server %s (%s) created: flavor %s image %s", rec.id, rec.name, flavor["name"], image["name"])
        return rec

    def _planned_fault(
        self, rec: ServerRecord, image: dict[str, Any], flavor: dict[str, Any], build_error: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        host = self.catalogue["host"]
        novalidhost = {"phase": "scheduling", "code": 500, "message": "No valid host was found. ", "in_list": False}
        if build_error is not None:
            kind = build_error.get("fault", "novalidhost")
            if kind == "novalidhost":
                fault = dict(novalidhost)
            elif kind == "disk":
                fault = {
                    "phase": "spawning",
                    "code": 500,
                    "in_list": True,
                    "message": (
                        f"Build of instance {rec.id} aborted: Flavor's disk is too small for "
                        f"requested image. Flavor disk is {int(flavor['disk']) * 1024**3} bytes, "
                        f"image is {int(image.get('virtual_size') or 0)} bytes."
                    ),
                }
            elif isinstance(kind, dict):
                fault = {
                    "phase": "spawning",
                    "code": int(kind.get("code", 500)),
                    "message": str(kind.get("message", "Unknown error")),
                    "in_list": True,
                }
            else:
                fault = {"phase": "spawning", "code": 500, "message": str(kind), "in_list": True}
            if "phase" in build_error:
                fault["phase"] = build_error["phase"]
            return fault
        if int(flavor["ram"]) > int(host["ram"]) or int(flavor["vcpus"]) > int(host["vcpus"]):
            return novalidhost
        virtual = int(image.get("virtual_size") or 0)
        if int(flavor["disk"]) > 0 and int(flavor["disk"]) * 1024**3 < virtual:
            return {
                "phase": "spawning",
                "code": 500,
                "in_list": True,
                "message": (
                    f"Build of instance {rec.id} aborted: Flavor's disk is too small for requested "
                    f"image. Flavor disk is {int(flavor['disk']) * 1024**3} bytes, image is "
                    f"{virtual} bytes."
                ),
            }
        return None

    def _set_error(self, rec: ServerRecord, fault: dict[str, Any]) -> None:
        now = time.time()
        rec.phase = "error"
        rec.updated = now
        rec.fault = {"code": fault.get("code", 500), "created": iso_z(now), "message": fault["message"]}
        rec.fault_in_list = bool(fault.get("in_list", True))
        log.info("server %s went to ERROR: %s", rec.id, fault["message"])
        if rec.launched is None:  # a failed build gives its volumes back
            for vol in self.attached_volumes(rec.id):
                self.volume_transition(
                    vol, "detaching", "available", 0.1, done=lambda v: setattr(v, "attachment", None)
                )

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
            booted_on = self.ports.get(rec.port_id or "")
            rec.address = booted_on.address if booted_on is not None else self.allocate_address(port)
            if booted_on is not None:
                booted_on.set_active(True)
            now = time.time()
            rec.phase, rec.launched, rec.updated = "active", now, now
            for vol in self.attached_volumes(rec.id):
                self.volume_transition(vol, "in-use", "in-use", 0)
            log.info("server %s ACTIVE at %s", rec.id, rec.address)
            await self._boot_host(rec)
        except asyncio.CancelledError:
            raise

    async def _boot_host(self, rec: ServerRecord) -> None:
        """The guest boots: its files are written and its units start (again, after a power-on)."""
        assert rec.plan is not None and rec.address is not None
        try:
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
                control_url=self.control_url,
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
        for vol in self.attached_volumes(rec.id):
            # Nova detaches every volume of a server it deletes; the volume is kept
            self.volume_transition(
                vol,
                "detaching",
                "available",
                self.config.delete_linger_s,
                done=lambda v: setattr(v, "attachment", None),
            )
        asyncio.get_running_loop().create_task(self._finish_delete(rec))

    async def _finish_delete(self, rec: ServerRecord) -> None:
        started = time.monotonic()
        if rec.host is not None:
            await rec.host.stop(self.config.kill_timeout_s)
        await asyncio.sleep(max(0.0, self.config.delete_linger_s - (time.monotonic() - started)))
        rec.gone = True
        port = self.ports.get(rec.port_id or "")
        if port is not None and port.device_id == rec.id:
            port.unbind()  # Nova did not create it: it keeps it
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
        for v in self.volumes.values():
            if v.task is not None and not v.task.done():
                v.task.cancel()
        self.volumes.clear()
        self.ports.clear()
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


def short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) < 300 else text[:300] + "..."


def quota_message(overs: list[str], req: dict[str, int], used: dict[str, int], quotas: dict[str, int]) -> str:
    names = ", ".join(overs)
    return (
        f"Quota exceeded for {names}: Requested {', '.join(str(req[o]) for o in overs)}, but already used "
        f"{', '.join(str(used[o]) for o in overs)} of {', '.join(str(quotas[o]) for o in overs)} {names}"
    )
