"""Turn an instance's user-data into a boot plan, the way cloud-init + systemd would act on it.

Independent of the spawner: this reads only the bytes Nova received. The plan says which files
cloud-init writes (``write_files``), which units ``runcmd`` enables/starts through ``systemctl``, and for
each started unit the argv, environment, user and working directory systemd would use. Anything that
would make the real boot not start the service (no ``#cloud-config`` header, YAML error, unit not
written, unit only enabled, bad ExecStart, unknown ``User=``, missing env file...) is recorded as a
reason and the unit is not run, exactly like a real VM that comes up ACTIVE but serves nothing.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import posixpath
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import systemd

UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
# users that exist on the image before cloud-init runs (Debian cloud image: "debian" is the default user)
BASE_USERS = ("root", "daemon", "bin", "sys", "nobody", "_apt", "systemd-network")
DEFAULT_USER = "debian"


@dataclass
class WrittenFile:
    path: str
    content: bytes
    mode: int
    owner: str
    encoding: str
    append: bool = False
    defer: bool = False

    def report(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "mode": f"{self.mode:04o}",
            "owner": self.owner,
            "encoding": self.encoding,
            "append": self.append,
            "defer": self.defer,
            "size": len(self.content),
        }


@dataclass
class UnitPlan:
    """One unit that runcmd started; ``runnable`` tells whether systemd would have run it."""

    name: str
    action: str  # how runcmd started it, e.g. "enable --now" or "start"
    path: str | None = None
    user: str | None = None
    group: str | None = None
    working_directory: str | None = None
    exec_start: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    environment_files: list[str] = field(default_factory=list)
    type: str = "simple"
    restart: str = "no"
    restart_sec: float = 0.1
    runnable: bool = False
    reason: str = ""
    warnings: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("env")
        data["env_keys"] = sorted(self.env)
        return data


@dataclass
class BootPlan:
    cloud_config: bool = False
    reason: str = ""  # why nothing runs at all (empty when at least the document was understood)
    users: list[str] = field(default_factory=list)
    files: list[WrittenFile] = field(default_factory=list)
    runcmd: list[Any] = field(default_factory=list)
    units: list[UnitPlan] = field(default_factory=list)
    enabled_only: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def file(self, path: str) -> WrittenFile | None:
        found = None
        for f in self.files:
            if f.path == path:
                found = f  # the last write wins
        return found

    def report(self) -> dict[str, Any]:
        return {
            "cloud_config": self.cloud_config,
            "reason": self.reason,
            "users": self.users,
            "files": [f.report() for f in self.files],
            "runcmd": self.runcmd,
            "units": [u.report() for u in self.units],
            "enabled_only": self.enabled_only,
            "log": self.log,
        }


def decode_user_data(user_data_b64: str | None) -> bytes:
    """Nova hands the instance the base64-decoded bytes; cloud-init also accepts gzip'd user-data."""
    if not user_data_b64:
        return b""
    raw = base64.b64decode(user_data_b64)
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw


def _decode_content(item: dict[str, Any]) -> tuple[bytes, str]:
    encoding = str(item.get("encoding", "text/plain")).lower()
    content = item.get("content", "")
    if content is None:
        content = ""
    if not isinstance(content, str):
        content = str(content)
    data = content.encode("utf-8")
    if encoding in ("b64", "base64"):
        data = base64.b64decode(data)
    elif encoding in ("gz", "gzip"):
        data = gzip.decompress(data)
    elif encoding in ("gz+base64", "gzip+base64", "gz+b64", "gzip+b64"):
        data = gzip.decompress(base64.b64decode(data))
    elif encoding not in ("text/plain", ""):
        raise ValueError(f"unknown write_files encoding {encoding!r}")
    return data, encoding


def _decode_perms(value: Any) -> int:
    # cloud-init's decode_perms: an int is taken as is (YAML 0600 is already octal), strings are octal
    if value is None:
        return 0o644
    if isinstance(value, bool):
        raise ValueError(f"invalid permissions {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    return int(str(value), 8)


def _systemctl_calls(cmd: Any) -> list[list[str]]:
    """Extract systemctl argv lists from one runcmd entry (list = exec, string = sh -c)."""
    if isinstance(cmd, list):
        argv = [str(a) for a in cmd]
        if len(argv) >= 3 and posixpath.basename(argv[0]) in ("sh", "bash", "dash") and argv[1] == "-c":
            return _systemctl_calls(argv[2])
        if argv and posixpath.basename(argv[0]) == "systemctl":
            return [argv]
        return []
    if isinstance(cmd, str):
        try:
            tokens = shlex.split(cmd, comments=True)
        except ValueError:
            return []
        calls: list[list[str]] = []
        current: list[str] = []
        for tok in [*tokens, ";"]:
            if tok in (";", "&&", "||", "|", "&"):
                if current and posixpath.basename(current[0]) == "systemctl":
                    calls.append(current)
                current = []
            else:
                current.append(tok)
        return calls
    return []


def _unit_name(name: str) -> str:
    if "." not in name.rsplit("/", 1)[-1]:
        return name + ".service"
    return name


def build_plan(user_data: bytes, *, image_users: tuple[str, ...] = ()) -> BootPlan:
    """Read user-data bytes and decide what a real boot would run."""
    plan = BootPlan()
    if not user_data:
        plan.reason = "no user-data: cloud-init has nothing to do"
        return plan
    try:
        text = user_data.decode("utf-8")
    except UnicodeDecodeError:
        plan.reason = "user-data is not UTF-8 text"
        return plan
    first_line = text.split("\n", 1)[0].strip()
    if first_line != "#cloud-config":
        plan.reason = f"user-data does not start with #cloud-config (first line {first_line[:40]!r})"
        return plan
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        plan.reason = f"cloud-config is not valid YAML: {exc}"
        return plan
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        plan.reason = "cloud-config is not a mapping"
        return plan
    plan.cloud_config = True

    # users
    users_cfg = doc.get("users", ["default"])
    known_users = set(BASE_USERS) | set(image_users)
    if isinstance(users_cfg, list):
        for entry in users_cfg:
            if entry == "default":
                plan.users.append(DEFAULT_USER)
            elif isinstance(entry, dict) and "name" in entry:
                plan.users.append(str(entry["name"]))
            elif isinstance(entry, str):
                plan.users.append(entry)
            else:
                plan.log.append(f"users: ignoring malformed entry {entry!r}")
    else:
        plan.log.append("users: not a list, ignored")
    known_users |= set(plan.users)

    # write_files
    files_cfg = doc.get("write_files", []) or []
    if not isinstance(files_cfg, list):
        plan.log.append("write_files: not a list, ignored")
        files_cfg = []
    for item in files_cfg:
        if not isinstance(item, dict) or not item.get("path"):
            plan.log.append(f"write_files: entry without path ignored: {item!r}"[:200])
            continue
        try:
            content, encoding = _decode_content(item)
            mode = _decode_perms(item.get("permissions"))
        except (ValueError, binascii.Error, OSError, EOFError) as exc:
            plan.log.append(f"write_files: {item.get('path')}: {exc}; file not written")
            continue
        plan.files.append(
            WrittenFile(
                path=posixpath.normpath(str(item["path"])),
                content=content,
                mode=mode,
                owner=str(item.get("owner", "root:root")),
                encoding=encoding,
                append=bool(item.get("append", False)),
                defer=bool(item.get("defer", False)),
            )
        )

    # runcmd -> systemctl
    runcmd = doc.get("runcmd", []) or []
    if not isinstance(runcmd, list):
        plan.log.append("runcmd: not a list, ignored")
        runcmd = []
    plan.runcmd = runcmd
    started: dict[str, str] = {}
    enabled: list[str] = []
    for cmd in runcmd:
        for argv in _systemctl_calls(cmd):
            args = [a for a in argv[1:] if not a.startswith("-")]
            flags = [a for a in argv[1:] if a.startswith("-")]
            if not args:
                continue
            verb, names = args[0], [_unit_name(n) for n in args[1:]]
            if verb in ("start", "restart", "try-restart", "reload-or-restart", "try-reload-or-restart"):
                for name in names:
                    started[name] = verb
            elif verb in ("enable", "reenable"):
                for name in names:
                    if "--now" in flags:
                        started[name] = f"{verb} --now"
                    elif name not in started:
                        enabled.append(name)
            elif verb in ("stop", "disable", "mask", "kill"):
                for name in names:
                    if verb in ("stop", "kill") or "--now" in flags or verb == "mask":
                        started.pop(name, None)
            elif verb in ("daemon-reload", "daemon-reexec"):
                pass
            else:
                plan.log.append(f"runcmd: systemctl {verb} ignored by the double")
    plan.enabled_only = [n for n in enabled if n not in started]
    for name in plan.enabled_only:
        plan.log.append(f"{name} is only enabled (no --now, no start): it would start at the next boot, not this one")
    if not started:
        plan.log.append("runcmd starts no systemd unit: nothing runs")
    for name, action in started.items():
        plan.units.append(_plan_unit(plan, name, action, known_users))
    return plan


def plan_from_root(root: Path, users: list[str]) -> BootPlan:
    """The files a running fake VM holds under ``root`` now, as a plan (for a unit started after boot)."""
    plan = BootPlan(cloud_config=True, users=list(users))
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        plan.files.append(
            WrittenFile(
                path="/" + path.relative_to(root).as_posix(),
                content=path.read_bytes(),
                mode=path.stat().st_mode & 0o7777,
                owner="root:root",
                encoding="text/plain",
            )
        )
    return plan


def plan_unit(plan: BootPlan, name: str, action: str, known_users: set[str]) -> UnitPlan:
    """What systemd would run for ``systemctl <action> <name>`` given ``plan``'s files and users."""
    return _plan_unit(plan, _unit_name(name), action, known_users)


def _find_unit(plan: BootPlan, name: str) -> tuple[str | None, list[str], dict[str, str]]:
    """Locate a unit (and drop-ins) among the written files; handle template units foo@bar.service."""
    specifiers: dict[str, str] = {"n": name, "N": name.rsplit(".", 1)[0]}
    prefix = specifiers["N"]
    instance = ""
    candidates = [name]
    if "@" in name:
        prefix, instance = specifiers["N"].split("@", 1)
        candidates.append(f"{prefix}@.{name.rsplit('.', 1)[1]}")
    specifiers["p"] = prefix
    specifiers["i"] = instance
    specifiers["I"] = instance
    for cand in candidates:
        for d in UNIT_DIRS:
            f = plan.file(f"{d}/{cand}")
            if f is not None:
                texts = [f.content.decode("utf-8", "replace")]
                dropins = sorted(
                    (
                        w
                        for w in plan.files
                        if posixpath.dirname(w.path) == f"{d}/{name}.d" and w.path.endswith(".conf")
                    ),
                    key=lambda w: posixpath.basename(w.path),
                )
                texts += [w.content.decode("utf-8", "replace") for w in dropins]
                return f.path, texts, specifiers
    return None, [], specifiers


def _plan_unit(plan: BootPlan, name: str, action: str, known_users: set[str]) -> UnitPlan:
    unit = UnitPlan(name=name, action=action)
    path, texts, specifiers = _find_unit(plan, name)
    if path is None:
        unit.reason = f"Unit {name} not found (no unit file written to {', '.join(UNIT_DIRS)})"
        return unit
    unit.path = path
    try:
        spec = systemd.service_spec(name, texts)
    except systemd.UnitError as exc:
        unit.reason = f"{name}: bad unit file: {exc}"
        return unit
    unit.user, unit.group = spec.user, spec.group
    unit.working_directory = spec.working_directory
    unit.type, unit.restart, unit.restart_sec = spec.type, spec.restart, spec.restart_sec
    unit.exec_start = list(spec.exec_start)
    unit.environment_files = list(spec.environment_files)
    user = spec.user or "root"
    specifiers["u"] = user
    specifiers["h"] = "/root" if user == "root" else f"/home/{user}"
    if not spec.exec_start:
        unit.reason = f"{name} has no ExecStart= (Service has no ExecStart=, ExecStop=, or SuccessAction=)"
        return unit
    if len(spec.exec_start) > 1 and spec.type != "oneshot":
        unit.reason = f"{name} has more than one ExecStart= but Type={spec.type} (only oneshot allows that)"
        return unit
    try:
        env = systemd.environment_assignments(spec.environment, specifiers)
    except systemd.UnitError as exc:
        unit.reason = f"{name}: bad Environment=: {exc}"
        return unit
    for ef in spec.environment_files:
        optional = ef.startswith("-")
        ef_path = posixpath.normpath(ef[1:] if optional else ef)
        written = plan.file(ef_path)
        if written is None:
            if optional:
                unit.warnings.append(f"EnvironmentFile {ef_path} missing (optional, ignored)")
                continue
            unit.reason = f"{name}: Failed to load environment files: {ef_path} not found (217/ENVIRONMENT)"
            return unit
        file_env, warnings = systemd.parse_env_file(written.content.decode("utf-8", "replace"))
        unit.warnings.extend(f"{ef_path}: {w}" for w in warnings)
        env.update(file_env)  # EnvironmentFile= overrides Environment=
    unit.env = env
    if user not in known_users:
        unit.reason = f"{name}: User={user} does not exist on the instance (217/USER)"
        return unit
    try:
        prefix, argv = systemd.parse_exec_start(spec.exec_start[-1], specifiers)
    except systemd.UnitError as exc:
        unit.reason = f"{name}: bad ExecStart=: {exc}"
        return unit
    unit.argv = argv if ":" in prefix else systemd.expand_env_argv(argv, env)
    if not unit.argv:
        unit.reason = f"{name}: ExecStart= expands to nothing"
        return unit
    unit.runnable = True
    return unit
