"""Start the double as a subprocess for a test: ``with running_double(tmp_path, latency=0.0) as double:``.

The handle gives ``double.url`` (Keystone URL for libcloud's ``ex_force_auth_url``), ``double.control_url``,
``double.client`` (:class:`DoubleClient`), ``double.pid``, ``double.state_dir`` and ``double.log_path``
(the double's own log). The double is always stopped on exit, and so is every instance process it
started (even if the double itself had to be SIGKILLed). Options are the CLI flags with ``_`` for ``-``:
``latency``, ``no_run``, ``scheduling_s``, ``spawning_s``, ``delete_linger_s``, ``boot_delay_s``,
``token_ttl_s``, ``token_revoke_after_s``, ``standin_port``, ``kill_timeout_s``, ``subnet``, ``catalogue``.

A pytest fixture is a three-liner::

    @pytest.fixture
    def double(tmp_path):
        with running_double(tmp_path) as handle:
            yield handle
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..localhost import stop_process
from .client import DoubleClient

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DoubleHandle:
    url: str
    control_url: str
    client: DoubleClient
    pid: int
    state_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _cli_args(opts: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in opts.items():
        flag = "--" + key.replace("_", "-")
        if key == "latency_s":
            flag = "--latency"
        if isinstance(value, bool):
            if value:
                args.append(flag)
        elif value is not None:
            args += [flag, str(value)]
    return args


def _kill_instance_pids(state_dir: Path) -> None:
    pidfile = state_dir / "instance-pids"
    if not pidfile.exists():
        return
    for line in pidfile.read_text().split():
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.killpg(int(line), signal.SIGKILL)


@contextlib.contextmanager
def running_double(tmp_path: Path, *, start_timeout_s: float = 20.0, **opts: Any) -> Iterator[DoubleHandle]:
    """Run ``python -m testkit.osdouble`` in its own process; yield a handle once it answers."""
    base = Path(tmp_path) / "osdouble"
    base.mkdir(parents=True, exist_ok=True)
    portfile = base / "ports.json"
    state_dir = base / "state"
    log_path = base / "double.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    # instances resolve bare ExecStart names (jupyterhub-singleuser) on the double's PATH: put this venv first
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    cmd = [
        sys.executable,
        "-m",
        "testkit.osdouble",
        "--port",
        "0",
        "--control-port",
        "0",
        "--portfile",
        str(portfile),
        "--state-dir",
        str(state_dir),
        *_cli_args(opts),
    ]
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout_s
        info = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the double exited with {proc.returncode}:\n{log_path.read_text()}")
            if portfile.exists():
                info = json.loads(portfile.read_text())
                try:
                    client = DoubleClient(info["control_url"], timeout_s=5)
                    if client.health()["ok"]:
                        break
                except OSError:
                    pass
            time.sleep(0.05)
        else:
            raise TimeoutError(f"the double did not answer within {start_timeout_s}s:\n{log_path.read_text()}")
        assert info is not None
        yield DoubleHandle(
            url=info["url"],
            control_url=info["control_url"],
            client=DoubleClient(info["control_url"]),
            pid=proc.pid,
            state_dir=state_dir,
            log_path=log_path,
            process=proc,
        )
    finally:
        stop_process(proc, 30)
        _kill_instance_pids(state_dir)


def libcloud_driver(double: DoubleHandle, api_version: str | None = None, **kw: Any) -> Any:
    """libcloud's real OpenStack driver pointed at the double (the recordings' constructor arguments)."""
    from libcloud.compute.providers import get_driver
    from libcloud.compute.types import Provider

    cls = get_driver(Provider.OPENSTACK)
    args: dict[str, Any] = {
        "ex_force_auth_version": "3.x_password",
        "ex_force_auth_url": double.url,
        "ex_force_service_region": "RegionOne",
        "ex_tenant_name": "jupyter",
        "ex_domain_name": "Default",
    }
    if api_version:
        args["api_version"] = api_version
    args.update(kw)
    user = args.pop("user", "jupyter")
    key = args.pop("key", "secret")
    return cls(user, key, **args)


def by_name(items: list[Any], name: str) -> Any:
    return next(i for i in items if i.name == name)


def keystone_token(double: DoubleHandle) -> str:
    """A token from the double's Keystone, asked for as libcloud's recorded request asks."""
    import requests

    from .catalogue import load_recording

    body = load_recording("default-driver/001-POST-v3_auth_tokens-201.json")["request"]["body"]["json"]
    body["auth"]["identity"]["password"]["user"]["password"] = "secret"
    resp = requests.post(f"{double.url}/v3/auth/tokens", json=body, timeout=10)
    assert resp.status_code == 201
    return resp.headers["X-Subject-Token"]


def node_state(node: Any) -> tuple[str, str | None] | None:
    """(state, task_state) of a libcloud Node, or None."""
    return None if node is None else (node.state, node.extra["task_state"])


def states_until_error(driver: Any, node: Any, *, most: int = 6, timeout_s: float = 30.0) -> list[Any]:
    """The distinct (state, task_state) a node goes through, read every 50 ms, until ERROR (bounded)."""
    seen = [node_state(node)]
    deadline = time.monotonic() + timeout_s
    while seen[-1] != ("error", None):
        current = node_state(driver.ex_get_node_details(node.id))
        if current != seen[-1]:
            seen.append(current)
        assert len(seen) < most and time.monotonic() < deadline, seen
        time.sleep(0.05)
    return seen
