"""What an instance "is" on the host: its files, its process(es) or its stand-in, its log.

On ACTIVE the double writes the instance's ``write_files`` under ``<instance dir>/root`` (with their
modes), then for every unit the boot plan marks runnable starts ExecStart as a local process (own
session, as the current user; the ``User=`` it asked for is only recorded), with exactly the
environment systemd would give it, ``HOME`` and working directory ``<instance dir>/home``, stdout and
stderr in ``<instance dir>/console.log``.

The one network emulation: a VM's ``0.0.0.0`` is its own address. Where the bind address ``0.0.0.0``
appears in ``JUPYTERHUB_SERVICE_URL`` or in a bind option (``--ip``, ``--bind``, ``--ServerApp.ip``,
``--SingleUserNotebookApp.ip``; ``--opt=0.0.0.0`` or ``--opt 0.0.0.0``), it becomes the instance's
``127.0.0.N``. And the files: an environment value that is the absolute path of a file the VM holds (written by
cloud-init or by a root unit, e.g. ``JUPYTERHUB_SSL_KEYFILE``) becomes that file's path under ``root/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tornado import httpserver, netutil, web

from . import systemd
from .cloudconfig import BASE_USERS, BootPlan, UnitPlan, plan_from_root, plan_unit

log = logging.getLogger("osdouble.instances")

BIND_OPTIONS = ("--ip", "--bind", "--ServerApp.ip", "--SingleUserNotebookApp.ip")
ANY_ADDRESS = "0.0.0.0"
START_LIMIT_BURST = 5  # systemd's DefaultStartLimitBurst / DefaultStartLimitIntervalSec
START_LIMIT_INTERVAL_S = 10.0
#: what a fake VM's root processes find first on their PATH: systemctl and useradd acting on the fake VM
VM_BIN = Path(__file__).resolve().parent / "vmbin"


def substitute_bind(argv: list[str], env: dict[str, str], address: str) -> tuple[list[str], dict[str, str]]:
    """Replace the bind address 0.0.0.0 by the instance's own address (see module doc)."""
    out: list[str] = []
    take_next = False
    for word in argv:
        if take_next:
            out.append(address if word == ANY_ADDRESS else word)
            take_next = False
            continue
        opt, eq, val = word.partition("=")
        if eq and opt in BIND_OPTIONS and val == ANY_ADDRESS:
            out.append(f"{opt}={address}")
        else:
            out.append(word)
            take_next = word in BIND_OPTIONS
    env = dict(env)
    url = env.get("JUPYTERHUB_SERVICE_URL")
    if url:
        parts = urlsplit(url)
        if parts.hostname == ANY_ADDRESS:
            netloc = address + (f":{parts.port}" if parts.port else "")
            env["JUPYTERHUB_SERVICE_URL"] = urlunsplit(parts._replace(netloc=netloc))
    return out, env


def service_port(plan: BootPlan, default: int) -> int:
    """The port the instance's server will listen on: --port / JUPYTERHUB_SERVICE_URL, else default."""
    for unit in plan.units:
        argv = unit.argv
        for i, word in enumerate(argv):
            if word.startswith("--port="):
                with contextlib.suppress(ValueError):
                    return int(word.split("=", 1)[1])
            if word == "--port" and i + 1 < len(argv):
                with contextlib.suppress(ValueError):
                    return int(argv[i + 1])
        url = unit.env.get("JUPYTERHUB_SERVICE_URL")
        if url:
            with contextlib.suppress(ValueError):
                port = urlsplit(url).port
                if port:
                    return port
    return default


class _StandinHandler(web.RequestHandler):
    """The --no-run stand-in: any GET answers 200 (JupyterHub's readiness check hits .../api)."""

    def initialize(self, instance_id: str) -> None:
        self.instance_id = instance_id

    def compute_etag(self) -> None:
        return None

    def get(self, path: str) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps({"version": "2.0.0", "osdouble": "stand-in", "instance": self.instance_id}))

    head = get


@dataclass
class RunningUnit:
    unit: UnitPlan
    argv: list[str]
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    pid: int | None = None
    returncode: int | None = None
    started_at: float | None = None
    exited_at: float | None = None
    exec_note: str = ""
    starts: list[float] = field(default_factory=list)
    restarts: int = 0


@dataclass
class InstanceHost:
    """Everything that lives on the host for one instance."""

    instance_id: str
    address: str
    directory: Path
    plan: BootPlan
    no_run: bool
    standin_port: int
    units: list[RunningUnit] = field(default_factory=list)
    standin: httpserver.HTTPServer | None = None
    standin_bound: tuple[str, int] | None = None
    status: str = "pending"  # pending | running | exited | not-started | stand-in | stopped
    reason: str = ""
    booted_at: float | None = None
    log_lines: list[str] = field(default_factory=list)
    stopping: bool = False
    root_shim: bool = False
    on_pids_changed: Callable[[], None] | None = None
    control_url: str | None = None
    added_users: list[str] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.directory / "root"

    @property
    def home(self) -> Path:
        return self.directory / "home"

    @property
    def console_log(self) -> Path:
        return self.directory / "console.log"

    def note(self, message: str) -> None:
        self.log_lines.append(message)
        log.info("instance %s: %s", self.instance_id, message)

    def local_path(self, vm_path: str) -> Path:
        return self.root / vm_path.lstrip("/")

    # ------------------------------------------------------------------ boot

    def write_files(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        for f in self.plan.files:
            target = self.local_path(f.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            mode = "ab" if f.append else "wb"
            with open(target, mode) as fh:
                fh.write(f.content)
            os.chmod(target, f.mode & 0o7777)

    def _resolve_executable(self, argv0: str, path_env: str) -> tuple[str | None, str]:
        written = self.plan.file(argv0) if argv0.startswith("/") else None
        if written is not None:
            local = self.local_path(argv0)
            if not written.mode & 0o111:
                return None, f"{argv0} is not executable (mode {written.mode:04o}) (203/EXEC)"
            return str(local), f"{argv0} written by cloud-init, run from {local}"
        if argv0.startswith("/"):
            if os.access(argv0, os.X_OK):
                return argv0, ""
            found = shutil.which(os.path.basename(argv0), path=path_env)
            if found:
                return found, f"{argv0} does not exist on this host; ran {found} from the double's PATH"
            return None, f"{argv0}: No such file or directory (203/EXEC)"
        found = shutil.which(argv0, path=path_env)
        if found:
            return found, f"{argv0} resolved on the double's PATH to {found}"
        return None, f"{argv0}: command not found on the double's PATH (203/EXEC)"

    async def boot(self) -> None:
        self.booted_at = time.time()
        self.write_files()
        for line in self.plan.log:
            self.note(line)
        if self.plan.reason:
            self.status, self.reason = "not-started", self.plan.reason
            self.note(f"nothing runs: {self.plan.reason}")
            return
        runnable = [u for u in self.plan.units if u.runnable]
        for u in self.plan.units:
            if not u.runnable:
                self.note(f"unit {u.name} not started: {u.reason}")
        if not runnable:
            self.status = "not-started"
            self.reason = "; ".join(u.reason for u in self.plan.units) or "runcmd starts no systemd unit"
            if self.plan.enabled_only:
                self.reason += "; only enabled: " + ", ".join(self.plan.enabled_only)
            return
        if self.no_run:
            await self._start_standin()
            return
        self._root_shim(runnable)
        for u in runnable:
            await self._launch(u)
        self.status = "running" if any(r.pid for r in self.units) else "not-started"
        if self.status == "not-started":
            self.reason = "no unit could be executed"

    async def _launch(self, u: UnitPlan) -> bool:
        argv, env = substitute_bind(u.argv, u.env, self.address)
        env = {k: (str(self.local_path(v)) if v.startswith("/") and self.local_path(v).is_file() else v)
               for k, v in env.items()}  # fmt: skip
        path = os.environ.get("PATH", os.defpath)
        base_env = {
            "PATH": path,
            "HOME": str(self.home),
            "USER": u.user or "root",
            "LOGNAME": u.user or "root",
            "SHELL": "/bin/sh",
            "LANG": "C.UTF-8",
            "INVOCATION_ID": uuid.uuid4().hex,
        }
        if (u.user or "root") == "root" and self.control_url:
            # a root process of the VM: its systemctl and useradd act on this fake VM, never on the host
            base_env.update(PATH=f"{VM_BIN}{os.pathsep}{path}", OSDOUBLE_CONTROL_URL=self.control_url,
                            OSDOUBLE_SERVER_ID=self.instance_id)  # fmt: skip
        base_env.update(env)
        run = RunningUnit(unit=u, argv=argv, env=base_env)
        self.units.append(run)
        exe, note = self._resolve_executable(argv[0], base_env["PATH"])
        run.exec_note = note
        if note:
            self.note(note)
        if exe is None:
            run.returncode = 203
            self.note(f"unit {u.name} failed: {note}")
            return False
        await self._start(run, exe)
        return True

    # ------------------------------------------------------------------ after boot (a root process asks)

    async def useradd(self, argv: list[str]) -> tuple[int, str]:
        """``useradd ... NAME``: the account exists on this VM from now on (exit 9 if it did already)."""
        names = [a for a in argv if not a.startswith("-")]
        if not names:
            return 2, "useradd: no user name"
        name = names[-1]
        if name in BASE_USERS or name in self.plan.users or name in self.added_users:
            return 9, f"useradd: user '{name}' already exists"
        self.added_users.append(name)
        self.note(f"useradd {name}")
        return 0, ""

    async def systemctl(self, argv: list[str]) -> tuple[int, str]:
        """``systemctl`` after boot: start (or ``enable --now``) a unit from the files the VM holds now."""
        words = [a for a in argv if not a.startswith("-")]
        if not words:
            return 1, "systemctl: no verb"
        verb, names = words[0], words[1:]
        starting = verb in ("start", "restart") or (verb == "enable" and "--now" in argv)
        if not starting:
            self.note(f"systemctl {' '.join(argv)}: nothing to do in the double")
            return 0, ""
        plan = plan_from_root(self.root, [*self.plan.users, *self.added_users])
        known = set(BASE_USERS) | set(plan.users)
        for name in names:
            unit = plan_unit(plan, name, verb, known)
            if not unit.runnable:
                self.note(f"systemctl {verb} {name}: not started: {unit.reason}")
                return 5, unit.reason
            self._root_shim([unit])
            if not await self._launch(unit):
                return 1, f"{name} failed to start"
        return 0, ""

    def _root_shim(self, runnable: list[UnitPlan]) -> None:
        """The process cannot switch to ``User=``; when the double runs as root that would make Jupyter
        refuse to start ("Running as root is not recommended"), which the real, unprivileged service
        never sees. The instance's HOME gets a Jupyter config allowing root, and the report says so."""
        if os.geteuid() != 0 or all((u.user or "root") == "root" for u in runnable):
            return
        config_dir = self.home / ".jupyter"
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / "jupyter_server_config.json").write_text(json.dumps({"ServerApp": {"allow_root": True}}))
        self.root_shim = True
        self.note("double runs as root while the unit asks for a user: ~/.jupyter allows root (emulation)")

    async def _start(self, run: RunningUnit, exe: str) -> None:
        u, argv = run.unit, run.argv
        # a written file given as an argument (e.g. a script) is read from the instance root
        args = [str(self.local_path(a)) if a.startswith("/") and self.plan.file(a) else a for a in argv[1:]]
        with open(self.console_log, "ab") as logf:
            logf.write(f"--- osdouble: starting {u.name}: {argv!r}\n".encode())
            logf.flush()
            try:
                proc = await asyncio.create_subprocess_exec(
                    exe,
                    *args,
                    env=run.env,
                    cwd=str(self.home),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=logf,
                    stderr=logf,
                    start_new_session=True,
                )
            except OSError as exc:
                run.returncode = 203
                self.note(f"unit {u.name} failed to exec: {exc}")
                return
        run.process, run.pid, run.started_at, run.returncode = proc, proc.pid, time.time(), None
        run.exited_at = None
        run.starts.append(run.started_at)
        if self.on_pids_changed is not None:
            self.on_pids_changed()
        self.note(f"unit {u.name} started, pid {proc.pid}, as User={u.user or 'root'} (requested)")
        asyncio.get_running_loop().create_task(self._reap(run, exe))

    async def _reap(self, run: RunningUnit, exe: str) -> None:
        assert run.process is not None
        run.returncode = await run.process.wait()
        run.exited_at = time.time()
        self.note(f"unit {run.unit.name} exited with status {run.returncode}")
        if not self.stopping and systemd.restart_wanted(run.unit.restart, run.returncode):
            recent = [t for t in run.starts if t > time.time() - START_LIMIT_INTERVAL_S]
            if len(recent) >= START_LIMIT_BURST:
                self.note(f"unit {run.unit.name}: start request repeated too quickly, refusing to start")
            else:
                await asyncio.sleep(run.unit.restart_sec)
                if not self.stopping:
                    run.restarts += 1
                    self.note(f"unit {run.unit.name}: scheduled restart (Restart={run.unit.restart})")
                    await self._start(run, exe)
                    return
        if all(r.returncode is not None for r in self.units) and self.status == "running":
            self.status = "exited"

    async def _start_standin(self) -> None:
        port = service_port(self.plan, self.standin_port)
        app = web.Application([(r"/(.*)", _StandinHandler, {"instance_id": self.instance_id})])
        server = httpserver.HTTPServer(app)
        try:
            sockets = netutil.bind_sockets(port, address=self.address)
        except OSError as exc:
            self.status, self.reason = "not-started", f"stand-in could not bind {self.address}:{port}: {exc}"
            self.note(self.reason)
            return
        server.add_sockets(sockets)
        self.standin, self.standin_bound = server, (self.address, port)
        self.status = "stand-in"
        self.note(f"--no-run: stand-in answering HTTP 200 on {self.address}:{port}")

    # ------------------------------------------------------------------ shutdown

    def pids(self) -> list[int]:
        return [r.pid for r in self.units if r.pid and r.returncode is None]

    async def stop(self, kill_timeout_s: float) -> None:
        """SIGTERM each process group, SIGKILL what is left after ``kill_timeout_s``."""
        self.stopping = True
        if self.standin is not None:
            self.standin.stop()
            self.standin = None
        live = [r for r in self.units if r.process is not None and r.returncode is None]
        for r in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.pid, signal.SIGTERM)  # type: ignore[arg-type]
        deadline = time.monotonic() + kill_timeout_s
        for r in live:
            assert r.process is not None
            remaining = max(0.0, deadline - time.monotonic())
            try:
                await asyncio.wait_for(asyncio.shield(r.process.wait()), remaining)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(r.pid, signal.SIGKILL)  # type: ignore[arg-type]
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(r.process.wait()), 5.0)
                self.note(f"unit {r.unit.name} did not stop on SIGTERM, killed")
            # the whole session goes, like the VM's processes do
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(r.pid, signal.SIGKILL)  # type: ignore[arg-type]
        if self.status in ("running", "stand-in"):
            self.status = "stopped"

    def kill_process(self, sig: int = signal.SIGKILL) -> list[int]:
        """The service dies inside a running VM (the instance stays ACTIVE); systemd restarts it if
        the unit's Restart= says so (SIGKILL is a failure, SIGTERM a clean stop)."""
        killed = []
        for r in self.units:
            if r.pid and r.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(r.pid, sig)
                    killed.append(r.pid)
        return killed

    # ------------------------------------------------------------------ report

    def report(self) -> dict[str, Any]:
        data = self.plan.report()
        data.update(
            status=self.status,
            reason=self.reason,
            address=self.address,
            no_run=self.no_run,
            root_shim=self.root_shim,
            directory=str(self.directory),
            root=str(self.root),
            home=str(self.home),
            console_log=str(self.console_log),
            booted_at=self.booted_at,
            standin=list(self.standin_bound) if self.standin_bound else None,
            processes=[
                {
                    "unit": r.unit.name,
                    "user": r.unit.user or "root",
                    "argv": r.argv,
                    "env_keys": sorted(r.env),
                    "pid": r.pid,
                    "returncode": r.returncode,
                    "started_at": r.started_at,
                    "exited_at": r.exited_at,
                    "exec_note": r.exec_note,
                    "restart": r.unit.restart,
                    "restarts": r.restarts,
                }
                for r in self.units
            ],
            events=self.log_lines,
        )
        return data
