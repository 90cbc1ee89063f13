"""Records of the OpenStack API double: its configuration, tokens, servers and calls, and the time and name
helpers of its answers."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from .cloudconfig import BootPlan
from .instances import InstanceHost
from .serveractions import PHASE_STATUS


def iso_z(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_micro(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")


def request_id() -> str:
    return f"req-{uuid.uuid4()}"


def same_name(given: Any, name: str) -> bool:
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
    volume_creating_s: float = 0.5  # Cinder: creating -> available
    volume_attaching_s: float = 0.5  # attaching -> in-use
    volume_detaching_s: float = 0.5  # detaching -> available
    volume_deleting_s: float = 0.5  # deleting -> 404
    power_s: float = 0.5  # os-stop, os-start, shelve, unshelve: how long the task state lasts

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
    phase: str = "scheduling"  # scheduling | spawning | active | error | shutoff | shelved_offloaded
    task_state: str | None = None  # a server action under way (powering-off, shelving, ...)
    launched: float | None = None
    fault: dict[str, Any] | None = None
    fault_in_list: bool = True
    planned_fault: dict[str, Any] | None = None
    deleting: bool = False
    deleted_at: float | None = None
    gone: bool = False
    address: str | None = None
    mac: str = ""
    port_id: str | None = None  # booted on a port created first (Neutron): its address, kept after delete
    no_run: bool = False
    plan: BootPlan | None = None
    host: InstanceHost | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def status(self) -> str:
        return PHASE_STATUS[self.phase]


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
