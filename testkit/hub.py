"""Hub tier helpers: a real ``jupyterhub`` process with its real ``configurable-http-proxy``, LibcloudSpawner
configured with the original documentation's lines, talking through libcloud's OpenStack driver over HTTP
to the OpenStack API double (``testkit/osdouble``), whose instances run the rendered user-data as local
processes. Driven through the REST API (a service token with admin scopes) and the HTML form.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from testkit.localhost import children, free_port, stop_leftovers, stop_process
from testkit.wait import wait_until

REPO = Path(__file__).resolve().parents[1]
NODE_BIN = REPO / "node_modules" / ".bin"
VENV_BIN = Path(sys.executable).parent
PASSWORD = "gloubiboulga-" + secrets.token_hex(8)  # distinctive, so the log check cannot miss it


def spawn_ready(hub: Hub, double, user: str) -> dict[str, Any]:
    """Start ``user``'s default server through the REST API, wait until the hub calls it ready, and return
    its one instance in the double (a second instance fails the unpacking)."""
    hub.create_user(user)
    assert hub.api("POST", f"/users/{user}/server", json={}).status_code in (201, 202)
    hub.wait_ready(user)
    [server] = cloud_servers(double, user=user)
    return server


def browser_open_spawn_form(page, hub_url: str, user: str, timeout_ms: int = 30_000) -> None:
    """In a Playwright page: log in through the hub's login form (any password: the test hubs use the dummy
    authenticator), then open the spawn form."""
    page.goto(f"{hub_url}/hub/login", timeout=timeout_ms)
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", "any")
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(lambda url: "/hub/login" not in url, timeout=timeout_ms)
    page.goto(f"{hub_url}/hub/spawn", timeout=timeout_ms)


def original_config(double_url: str) -> dict[str, Any]:
    """The original documentation's configuration lines, pointed at the double."""
    return {
        "libcloudparams": {
            "arg_user_id": "jupyter",
            "arg_key": PASSWORD,
            "ex_force_auth_version": "3.x_password",
            "ex_force_auth_url": double_url,
            "ex_force_service_region": "RegionOne",
            "ex_tenant_name": "jupyter",
            "ex_domain_name": "default",
        },
        "userserver_net": "flatnet",
        "cloud_region": "RegionOne",
        "userserver_sizes": [("1vcpu 2Go RAM", "m1.small"), ("2vcpu 4Go RAM", "m1.medium")],
        "userserver_images": [("Default image", "debian-12-jupyter"), ("Base image", "debian-12-base")],
    }


class Hub:
    """One JupyterHub (+ proxy) process with a generated config; restartable; logs to a file."""

    def __init__(self, workdir: Path, double, spawner_config: dict[str, Any], extra_config: str = ""):
        self.workdir = workdir
        self.double = double
        self.port = free_port()
        self.hub_port = free_port()
        self.proxy_api_port = free_port()
        self.singleuser_port = free_port()
        self.token = secrets.token_hex(24)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "jupyterhub.log"
        self.process: subprocess.Popen | None = None
        self.spawner_config = spawner_config
        self.extra_config = extra_config
        self.config_path = workdir / "jupyterhub_config.py"
        self.write_config()

    def write_config(self) -> None:
        lines = [
            "c = get_config()  # noqa",
            "c.JupyterHub.spawner_class = 'libcloudspawner.spawner.LibcloudSpawner'",
        ]
        for name, value in self.spawner_config.items():
            lines.append(f"c.LibcloudSpawner.{name} = {value!r}")
        lines += [
            f"c.LibcloudSpawner.port = {self.singleuser_port}",
            "c.LibcloudSpawner.hub_id = 'hubtier'",
            "c.LibcloudSpawner.startup_poll_interval_seconds = 0.5",
            "c.LibcloudSpawner.api_backoff_base_seconds = 0.2",
            "c.LibcloudSpawner.api_timeout_seconds = 10",
            "c.JupyterHub.authenticator_class = 'dummy'",
            "c.JupyterHub.allow_named_servers = True",
            "c.JupyterHub.cleanup_servers = False",
            f"c.JupyterHub.bind_url = 'http://127.0.0.1:{self.port}'",
            f"c.JupyterHub.hub_bind_url = 'http://127.0.0.1:{self.hub_port}'",
            f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{self.proxy_api_port}'",
            f"c.ConfigurableHTTPProxy.pid_file = {str(self.workdir / 'proxy.pid')!r}",
            f"c.JupyterHub.db_url = 'sqlite:///{self.workdir / 'jupyterhub.sqlite'}'",
            f"c.JupyterHub.cookie_secret_file = {str(self.workdir / 'cookie_secret')!r}",
            "c.JupyterHub.log_level = 'DEBUG'",
            f"c.JupyterHub.services = [{{'name': 'tester', 'api_token': {self.token!r}}}]",
            "c.JupyterHub.load_roles = [{'name': 'tester', 'services': ['tester'], 'scopes': ["
            "'admin:users', 'admin:servers', 'access:servers', 'read:users:activity', 'admin:groups']}]",
            self.extra_config,
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    # ------------------------------------------------------------------ process
    def start(self, timeout_s: float = 60) -> None:
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(NODE_BIN), str(VENV_BIN), env.get("PATH", os.defpath)])
        # the repository root, for spawner classes configured from it (benchmarks.floor_spawner); it holds no
        # `libcloudspawner`, so the hub still runs the installed package
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env.pop("CONFIGPROXY_AUTH_TOKEN", None)
        if shutil.which("configurable-http-proxy", path=env["PATH"]) is None:
            pytest.fail("configurable-http-proxy is missing: run `npm install` in the repository (./bootstrap does)")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(VENV_BIN / "jupyterhub"), "-f", str(self.config_path)],
                cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

        def up():
            if self.process.poll() is not None:
                raise AssertionError(f"jupyterhub exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                return requests.get(f"{self.url}/hub/api/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, timeout_s=timeout_s, what="jupyterhub to answer")

    def stop(self, timeout_s: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        started = children(self.process.pid)  # its proxy and managed services (the idle culler...)
        stop_process(self.process, timeout_s)
        self._stop_proxy()
        # a hub killed while it stopped its services leaves them running: stop those it started
        stopped = stop_leftovers(started)
        if stopped:
            with open(self.log_path, "a") as log:
                log.write(f"[testkit] processes of the stopped hub still running, stopped: {stopped}\n")

    def _stop_proxy(self) -> None:
        pid_file = self.workdir / "proxy.pid"
        if pid_file.exists():
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                pid = int(pid_file.read_text().strip())
                # only the proxy this hub started (its pid file is in its own work dir)
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(FileNotFoundError):
                pid_file.unlink()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # ------------------------------------------------------------------ REST API
    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {self.token}", **kwargs.pop("headers", {})}
        timeout = kwargs.pop("timeout", 30)
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=timeout, **kwargs)

    def create_user(self, name: str) -> None:
        r = self.api("POST", f"/users/{name}")
        assert r.status_code in (201, 409), r.text

    def server_url(self, user: str, server: str = "") -> str:
        return f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"

    def spawner_model(self, user: str, server: str = "") -> dict[str, Any] | None:
        r = self.api("GET", f"/users/{user}")
        assert r.status_code == 200, r.text
        return r.json().get("servers", {}).get(server)

    def wait_ready(self, user: str, server: str = "", timeout_s: float = 120) -> dict[str, Any]:
        def ready():
            model = self.spawner_model(user, server)
            if model is None and self.last_spawn_failed(user, server):
                raise AssertionError(f"spawn failed:\n{self.log_tail()}")
            return model if model and model.get("ready") else None

        return wait_until(ready, timeout_s=timeout_s, interval_s=0.5, what=f"{user}/{server} ready")

    def wait_gone(self, user: str, server: str = "", timeout_s: float = 120) -> None:
        wait_until(
            lambda: self.spawner_model(user, server) is None, timeout_s=timeout_s, what=f"{user}/{server} stopped"
        )

    def last_spawn_failed(self, user: str, server: str = "") -> bool:
        """True when the server's last spawn ended in failure.

        For a server that is neither ready nor pending, the hub's progress stream replays the failed spawn's
        event (``failed`` with the user's message); with no failed spawn on record it answers 400.
        """
        path = self.server_url(user, server) + "/progress"
        with self.api("GET", path, stream=True, headers={"Accept": "text/event-stream"}) as r:
            if r.status_code != 200:
                return False
            for line in r.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    return bool(json.loads(line[5:]).get("failed"))
        return False

    def progress(self, user: str, server: str = "", timeout_s: float = 120) -> list[dict[str, Any]]:
        """The progress events of a spawn, read from the event stream until it ends (deadline)."""
        path = self.server_url(user, server) + "/progress"
        events = []
        deadline = time.monotonic() + timeout_s
        with self.api("GET", path, stream=True, headers={"Accept": "text/event-stream"}) as r:
            assert r.status_code == 200, r.text
            for line in r.iter_lines(decode_unicode=True):
                if time.monotonic() > deadline:
                    raise AssertionError(f"progress stream still open after {timeout_s}s: {events}")
                if line and line.startswith("data:"):
                    event = json.loads(line[5:])
                    events.append(event)
                    if event.get("ready") or event.get("failed"):
                        break
        return events

    def through_proxy(self, user: str, server: str = "", path: str = "api") -> requests.Response:
        prefix = f"/user/{user}/{server + '/' if server else ''}"
        return requests.get(
            f"{self.url}{prefix}{path}", headers={"Authorization": f"token {self.token}"}, timeout=10,
            allow_redirects=False,
        )  # fmt: skip

    # ------------------------------------------------------------------ browser-like session
    def login(self, user: str) -> requests.Session:
        session = requests.Session()
        page = session.get(f"{self.url}/hub/login", timeout=10)
        xsrf = _xsrf(page.text)
        r = session.post(
            f"{self.url}/hub/login", data={"username": user, "password": "any", "_xsrf": xsrf}, timeout=10,
            allow_redirects=False,
        )  # fmt: skip
        assert r.status_code == 302, (r.status_code, r.text[:500])
        return session


def _xsrf(html: str) -> str:
    match = re.search(r'name="_xsrf"\s+value="([^"]+)"', html) or re.search(r'[?&]_xsrf=([^"&]+)', html)
    assert match, "no _xsrf field in the page"
    return match.group(1)


def cloud_servers(double, *, name: str | None = None, user: str | None = None) -> list[dict[str, Any]]:
    """Live (not deleted) instances in the double, optionally by name or by the spawner's user tag."""
    found = []
    for s in double.client.servers():
        if s.get("status") == "DELETED":
            continue
        if name is not None and s["name"] != name:
            continue
        if user is not None and (s.get("metadata") or {}).get("jupyterhub-user") != user:
            continue
        found.append(s)
    return found


@contextlib.contextmanager
def running_hub(tmp_path: Path, double, spawner_config: dict[str, Any], extra_config: str = "") -> Iterator[Hub]:
    workdir = tmp_path / "hub"
    workdir.mkdir(parents=True, exist_ok=True)
    hub = Hub(workdir, double, spawner_config, extra_config)
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()
