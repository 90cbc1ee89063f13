"""Boot a built image the way a cloud would, for the image tests and the image benchmark.

Plain QEMU, no video device (like a Nova VM without VNC/SPICE), the serial console logged to a file, user
networking with host forwards on 127.0.0.1 only, and a NoCloud seed whose user-data is the spawner's own
cloud-config plus, as a separate MIME part, a boothook that creates an SSH login for the tests. A small
stand-in hub on the host (reached from the guest at 10.0.2.2) answers the single-user server's hub API.

Every wait here has a deadline; every VM is stopped by its own PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from testkit.localhost import stop_process

#: the host as the guest sees it through QEMU user networking
GUEST_HOST_ADDR = "10.0.2.2"
SINGLEUSER_PORT = 8000
TEST_LOGIN = "lcs-test"


def ssh_banner(port: int) -> bool:
    """True when an SSH server answers on 127.0.0.1:port (QEMU accepts the TCP connection by itself)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.settimeout(5)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def http_ok(url: str) -> bool:
    """True when ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - a loopback URL built here
            return r.status == 200
    except (OSError, urllib.error.URLError):
        return False


# --- the stand-in hub ------------------------------------------------------------------------------------


@dataclass
class StubHub:
    """The part of the hub API a single-user server uses: ``GET /hub/api``, activity POSTs and ``GET
    /hub/api/user``, which identifies the bearer of ``user_token`` (when set) as ``username`` with the access
    scopes of that server, so that a test may call the server's own API (kernels) with that token."""

    version: str
    token: str
    username: str
    user_token: str = ""
    port: int = 0
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> StubHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):
                pass

            def _reply(self, code: int, body: object) -> None:
                data = json.dumps(body).encode()
                hub.requests.append((self.command, self.path, code))
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-JupyterHub-Version", hub.version)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                return self.headers.get("Authorization", "") in {f"token {hub.token}", f"Bearer {hub.token}"}

            def do_GET(self):
                if self.path.rstrip("/") == "/hub/api":
                    self._reply(200, {"version": hub.version})
                elif self.path.split("?")[0] == "/hub/api/user":
                    bearer = self.headers.get("Authorization", "")
                    if hub.user_token and bearer in {f"token {hub.user_token}", f"Bearer {hub.user_token}"}:
                        self._reply(200, hub.user_model())
                    else:
                        self._reply(403, {"status": 403, "message": "not a token of the stand-in hub's user"})
                else:
                    self._reply(404, {"status": 404, "message": "not in the stand-in hub"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if self.path == f"/hub/api/users/{hub.username}/activity":
                    self._reply(200 if self._authorized() else 403, {})
                else:
                    self._reply(404, {"status": 404, "message": "not in the stand-in hub"})

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True, name="stub-hub").start()
        return self

    def user_model(self) -> dict:
        """The model ``GET /hub/api/user`` returns for the bearer of ``user_token``."""
        scopes = [f"access:servers!server={self.username}/", f"access:servers!user={self.username}"]
        return {"kind": "user", "name": self.username, "admin": False, "groups": [], "scopes": scopes}

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def seen(self, method: str, path: str) -> bool:
        return any(m == method and p == path for m, p, _ in self.requests)


def hub_env(username: str, hub_port: int, token: str) -> dict[str, str]:
    """The JUPYTERHUB_* environment a real hub gives a single-user server, for a hub at 10.0.2.2."""
    api = f"http://{GUEST_HOST_ADDR}:{hub_port}/hub/api"
    prefix = f"/user/{username}/"
    scopes = json.dumps([f"access:servers!server={username}/", f"access:servers!user={username}"])
    return {
        "JUPYTERHUB_API_TOKEN": token,
        "JPY_API_TOKEN": token,
        "JUPYTERHUB_API_URL": api,
        "JUPYTERHUB_ACTIVITY_URL": f"{api}/users/{username}/activity",
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{username}",
        "JUPYTERHUB_HOST": "",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
        "JUPYTERHUB_OAUTH_SCOPES": scopes,
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": scopes,
        "JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES": "[]",
        "JUPYTERHUB_SERVER_NAME": "",
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_SERVICE_URL": f"http://0.0.0.0:{SINGLEUSER_PORT}{prefix}",
        "JUPYTERHUB_USER": username,
    }


# --- the NoCloud seed -------------------------------------------------------------------------------------


def login_boothook(pubkey: str, login: str = TEST_LOGIN) -> str:
    """A cloud-boothook creating an SSH login with passwordless sudo for testinfra.

    A separate MIME part, so the spawner's cloud-config stays byte-for-byte what the spawner renders (a
    second cloud-config part would replace its ``users:`` under cloud-init's default merge rules).
    """
    q = shlex.quote
    return (
        "#cloud-boothook\n#!/bin/sh\nset -eu\n"
        f"id {q(login)} >/dev/null 2>&1 || useradd -m -s /bin/sh {q(login)}\n"
        f"install -d -m 0700 -o {q(login)} -g {q(login)} /home/{login}/.ssh\n"
        f"printf '%s\\n' {q(pubkey.strip())} > /home/{login}/.ssh/authorized_keys\n"
        f"chown {q(login)}: /home/{login}/.ssh/authorized_keys\n"
        f"printf '%s\\n' {q(login + ' ALL=(ALL) NOPASSWD:ALL')} > /etc/sudoers.d/90-lcs-test\n"
        "chmod 0440 /etc/sudoers.d/90-lcs-test\n"
    )


def multipart_userdata(cloud_config: str, boothook: str | None) -> str:
    """The spawner's cloud-config, unmodified, plus an optional boothook part, as MIME multipart."""
    if boothook is None:
        return cloud_config
    msg = MIMEMultipart(boundary="lcs-image-test-" + secrets.token_hex(8))
    msg.attach(MIMEText(cloud_config, "cloud-config", "utf-8"))
    msg.attach(MIMEText(boothook, "cloud-boothook", "utf-8"))
    return msg.as_string()


def make_seed(workdir: Path, userdata: str, instance_id: str, hostname: str) -> Path:
    """A NoCloud seed ISO (volume label cidata) made with cloud-localds."""
    if not shutil.which("cloud-localds"):
        raise RuntimeError("cloud-localds is missing: install it with `apt-get install cloud-image-utils`")
    (workdir / "user-data").write_text(userdata, encoding="utf-8")
    (workdir / "meta-data").write_text(
        json.dumps({"instance-id": instance_id, "local-hostname": hostname}), encoding="utf-8"
    )
    seed = workdir / "seed.iso"
    subprocess.run(
        ["cloud-localds", str(seed), str(workdir / "user-data"), str(workdir / "meta-data")],
        check=True,
        timeout=60,
    )
    os.chmod(seed, 0o600)
    return seed


# --- the VM --------------------------------------------------------------------------------------------


@dataclass
class VM:
    """A QEMU guest booted from a throw-away overlay of ``image``."""

    image: Path
    workdir: Path
    seed: Path
    accelerator: str = "tcg"
    forwards: Mapping[int, int] = field(default_factory=dict)  # host port -> guest port
    cpus: int = 2
    memory_mb: int = 2048
    proc: subprocess.Popen | None = None
    started_at: float = 0.0

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    def command(self) -> list[str]:
        overlay = self.workdir / "overlay.qcow2"
        fwd = "".join(f",hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in self.forwards.items())
        # emulated: the x86-64-v2 baseline (NumPy 2's), not "max", so that the tests fail if the image needs a
        # newer CPU than clouds commonly offer (the dev cloud's Nova is configured with the same model)
        cpu = "host" if self.accelerator == "kvm" else "Nehalem"
        return [
            "qemu-system-x86_64",
            "-nodefaults",
            "-machine", f"pc,accel={self.accelerator}",
            "-cpu", cpu,
            "-smp", str(self.cpus),
            "-m", str(self.memory_mb),
            "-display", "none",
            "-vga", "none",
            "-serial", f"file:{self.console_log}",
            "-drive", f"file={overlay},format=qcow2,if=virtio,discard=unmap",
            "-drive", f"file={self.seed},format=raw,if=virtio,readonly=on",
            "-netdev", f"user,id=net0{fwd}",
            "-device", "virtio-net-pci,netdev=net0",
            "-device", "virtio-rng-pci",
        ]  # fmt: skip

    def start(self) -> VM:
        if not shutil.which("qemu-system-x86_64"):
            raise RuntimeError("qemu-system-x86_64 is missing: install it with `apt-get install qemu-system-x86`")
        overlay = self.workdir / "overlay.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(self.image.resolve()),
             str(overlay)],
            check=True,
            timeout=60,
        )  # fmt: skip
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=open(self.workdir / "qemu.out", "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def stop(self, timeout_s: float = 20) -> None:
        """Stop this VM (its own PID only): SIGTERM, then SIGKILL at the deadline."""
        stop_process(self.proc, timeout_s)

    def console_tail(self, lines: int = 30) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def running_vm(vm: VM) -> Iterator[VM]:
    """Start ``vm`` and always stop it."""
    try:
        yield vm.start()
    finally:
        vm.stop()
