"""The double's instances really run what their user-data says (cloud-init write_files + systemd unit)."""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from libcloud.compute.base import NodeDriver
from libcloud.compute.providers import get_driver
from libcloud.compute.types import Provider

from testkit.osdouble.fixture import DoubleHandle, running_double

PORT = 18765

# an EnvironmentFile with the quoting systemd knows: each value below must reach the process exactly
ENV_FILE = r"""# written by cloud-init, read by systemd
TOKEN="a\"b\\c\`d\$e"
SINGLE='$HOME stays \n literal'
MULTI="line1
line2"
SPACES=   padded value   
HASH=a#b
JUPYTERHUB_SERVICE_URL="http://0.0.0.0:18765/user/alice/"
"""  # noqa: W291 (the trailing spaces are part of the test)

EXPECTED_ENV = {
    "TOKEN": 'a"b\\c`d$e',
    "SINGLE": "$HOME stays \\n literal",
    "MULTI": "line1\nline2",
    "SPACES": "padded value",
    "HASH": "a#b",
    "GREETING": "hello world",
    "PERCENT": "100%",
}

UNIT = f"""[Unit]
Description=probe

[Service]
User=alice
Environment="GREETING=hello world" PERCENT=100%%
EnvironmentFile=/etc/probe/env
ExecStart=python3 -m http.server --bind 0.0.0.0 {PORT}
"""


def user_data(unit: str = UNIT, runcmd: Any = None, env_file: str = ENV_FILE) -> str:
    doc = {
        "users": ["default", {"name": "alice", "lock_passwd": True}],
        "write_files": [
            {"path": "/etc/probe/env", "owner": "root:root", "permissions": "0600", "content": env_file},
            {"path": "/etc/systemd/system/probe.service", "owner": "root:root", "permissions": "0644", "content": unit},
        ],
        "runcmd": runcmd
        if runcmd is not None
        else [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "probe.service"]],
    }
    return "#cloud-config\n" + yaml.safe_dump(doc)


@pytest.fixture(scope="module")
def double(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DoubleHandle]:
    with running_double(
        tmp_path_factory.mktemp("boot"), scheduling_s=0.1, spawning_s=0.1, delete_linger_s=0.3, kill_timeout_s=2
    ) as handle:
        yield handle


@pytest.fixture
def fresh(double: DoubleHandle) -> DoubleHandle:
    double.client.reset(config=True)
    return double


def driver(double: DoubleHandle) -> NodeDriver:
    cls = get_driver(Provider.OPENSTACK)
    return cls(
        "jupyter",
        "secret",
        ex_force_auth_version="3.x_password",
        ex_force_auth_url=double.url,
        ex_force_service_region="RegionOne",
        ex_tenant_name="jupyter",
        ex_domain_name="Default",
    )


def create(double: DoubleHandle, name: str, ud: str) -> str:
    drv = driver(double)
    size = next(s for s in drv.list_sizes() if s.name == "m1.small")
    image = next(i for i in drv.list_images() if i.name == "debian-12-jupyter")
    return drv.create_node(
        name=name, size=size, image=image, networks=drv.ex_list_networks(), ex_userdata=ud, ex_config_drive=True
    ).id


def http_get(url: str, timeout_s: float = 20.0) -> tuple[int, bytes]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (loopback http)
                return resp.status, resp.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if item)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[1][0] != "Z"


def wait_gone(pid: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still alive"
        time.sleep(0.05)


def test_instance_runs_the_unit_with_exactly_its_environment(fresh: DoubleHandle) -> None:
    server_id = create(fresh, "probe-1", user_data())
    fresh.client.wait_for_server(server_id, status="ACTIVE", boot_status="running", timeout_s=20)
    report = fresh.client.boot_report(server_id)
    address = report["address"]
    assert address.startswith("127.0.0.") and address != "127.0.0.1"

    files = {f["path"]: f for f in report["files"]}
    assert (files["/etc/probe/env"]["mode"], files["/etc/probe/env"]["owner"]) == ("0600", "root:root")
    assert (files["/etc/systemd/system/probe.service"]["mode"]) == "0644"
    [unit] = report["units"]
    assert (unit["name"], unit["user"], unit["action"]) == ("probe.service", "alice", "enable --now")
    [proc] = report["processes"]
    assert proc["user"] == "alice"
    assert proc["argv"] == ["python3", "-m", "http.server", "--bind", address, str(PORT)]

    env = proc_environ(proc["pid"])
    for key, value in EXPECTED_ENV.items():
        assert env[key] == value, key
    assert env["JUPYTERHUB_SERVICE_URL"] == f"http://{address}:{PORT}/user/alice/"
    assert env["HOME"] == report["home"]
    base = {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "INVOCATION_ID"}
    assert set(env) == base | set(EXPECTED_ENV) | {"JUPYTERHUB_SERVICE_URL"}
    assert set(proc["env_keys"]) == set(env)
    assert fresh.client.instance_env(server_id)[0]["env"] == env

    status, _ = http_get(f"http://{address}:{PORT}/")
    assert status == 200
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{PORT}/", timeout=2)


def test_two_instances_share_the_port_on_their_own_addresses(fresh: DoubleHandle) -> None:
    ids = [create(fresh, f"probe-{i}", user_data()) for i in range(2)]
    addresses = []
    for server_id in ids:
        fresh.client.wait_for_server(server_id, status="ACTIVE", boot_status="running", timeout_s=20)
        addresses.append(fresh.client.boot_report(server_id)["address"])
    assert len(set(addresses)) == 2
    for address in addresses:
        assert http_get(f"http://{address}:{PORT}/")[0] == 200


def test_delete_kills_the_process_even_if_it_ignores_sigterm(fresh: DoubleHandle, tmp_path: Path) -> None:
    # the process says when SIGTERM is ignored: a delete that came sooner would find it still terminable
    ignoring = tmp_path / "ignoring-sigterm"
    stubborn = UNIT.replace(
        f"ExecStart=python3 -m http.server --bind 0.0.0.0 {PORT}",
        'ExecStart=python3 -c "import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); '
        f"pathlib.Path('{ignoring}').touch(); time.sleep(600)\"",
    )
    server_id = create(fresh, "stubborn", user_data(unit=stubborn))
    fresh.client.wait_for_server(server_id, status="ACTIVE", boot_status="running", timeout_s=20)
    [proc] = fresh.client.boot_report(server_id)["processes"]
    assert alive(proc["pid"])
    deadline = time.monotonic() + 20
    while not ignoring.exists():
        assert time.monotonic() < deadline, "the stubborn unit never installed its SIGTERM handler"
        time.sleep(0.05)
    driver(fresh).destroy_node(driver(fresh).ex_get_node_details(server_id))
    wait_gone(proc["pid"], timeout_s=10)
    fresh.client.wait_for_server(server_id, status="DELETED", timeout_s=10)
    assert "did not stop on SIGTERM, killed" in " ".join(fresh.client.boot_report(server_id)["events"])


@pytest.mark.parametrize(
    ("ud", "reason"),
    [
        (user_data(runcmd=[["systemctl", "enable", "probe.service"]]), "only enabled"),
        (user_data(runcmd=[["systemctl", "start", "missing.service"]]), "Unit missing.service not found"),
        (user_data(unit=UNIT.replace("User=alice", "User=mallory")), "User=mallory does not exist"),
        (user_data(unit=UNIT.replace("ExecStart=python3", "ExecStart=/nonexistent/nope")), "203/EXEC"),
        ("#!/bin/sh\necho not cloud-config\n", "does not start with #cloud-config"),
    ],
)
def test_broken_user_data_leaves_the_instance_active_but_idle(fresh: DoubleHandle, ud: str, reason: str) -> None:
    server_id = create(fresh, "broken", ud)
    server = fresh.client.wait_for_server(server_id, status="ACTIVE", boot_status="not-started", timeout_s=20)
    assert server["pids"] == []
    report = fresh.client.boot_report(server_id)
    assert reason in report["reason"] or any(reason in e for e in report["events"])
    assert reason in fresh.log_text() or reason in report["reason"]


def test_bare_executable_resolves_on_the_doubles_path(fresh: DoubleHandle) -> None:
    unit = UNIT.replace(
        f"ExecStart=python3 -m http.server --bind 0.0.0.0 {PORT}", "ExecStart=jupyterhub-singleuser --version"
    )
    server_id = create(fresh, "version", user_data(unit=unit))
    server = fresh.client.wait_for_server(server_id, status="ACTIVE", timeout_s=20)
    deadline = time.monotonic() + 30
    while True:
        [proc] = fresh.client.boot_report(server_id)["processes"]
        if proc["returncode"] is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert proc["returncode"] == 0, fresh.client.instance_log(server_id)
    assert proc["exec_note"].endswith(str(Path(sys.executable).parent / "jupyterhub-singleuser"))
    assert server["boot_status"] in ("running", "exited")


def test_no_run_mode_answers_with_a_stand_in(fresh: DoubleHandle) -> None:
    fresh.client.set_config(no_run=True)
    spawner_like = UNIT.replace(
        f"ExecStart=python3 -m http.server --bind 0.0.0.0 {PORT}",
        f'ExecStart=jupyterhub-singleuser "--ip=0.0.0.0" "--port={PORT}"',
    )
    server_id = create(fresh, "standin", user_data(unit=spawner_like))
    fresh.client.wait_for_server(server_id, status="ACTIVE", boot_status="stand-in", timeout_s=20)
    report = fresh.client.boot_report(server_id)
    assert report["processes"] == [] and report["standin"] == [report["address"], PORT]
    status, body = http_get(f"http://{report['address']}:{PORT}/user/alice/api")
    assert status == 200 and b'"version"' in body
    driver(fresh).destroy_node(driver(fresh).ex_get_node_details(server_id))
    fresh.client.wait_for_server(server_id, status="DELETED", timeout_s=10)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{report['address']}:{PORT}/user/alice/api", timeout=2)


def test_leaving_the_fixture_kills_instance_processes(tmp_path: Path) -> None:
    with running_double(tmp_path, scheduling_s=0.1, spawning_s=0.1) as handle:
        server_id = create(handle, "left-behind", user_data())
        handle.client.wait_for_server(server_id, status="ACTIVE", boot_status="running", timeout_s=20)
        [proc] = handle.client.boot_report(server_id)["processes"]
        assert alive(proc["pid"])
    assert handle.process.poll() is not None
    wait_gone(proc["pid"], timeout_s=10)


def test_restart_policy_is_honoured(fresh: DoubleHandle) -> None:
    unit = UNIT.replace("[Service]\n", "[Service]\nRestart=on-failure\nRestartSec=0.2\n")
    server_id = create(fresh, "restarting", user_data(unit=unit))
    fresh.client.wait_for_server(server_id, status="ACTIVE", boot_status="running", timeout_s=20)
    [first] = fresh.client.boot_report(server_id)["processes"]
    address = fresh.client.boot_report(server_id)["address"]

    assert fresh.client.kill_instance_process(server_id, "SIGKILL") == [first["pid"]]
    deadline = time.monotonic() + 10
    while True:
        [proc] = fresh.client.boot_report(server_id)["processes"]
        if proc["pid"] != first["pid"] and proc["returncode"] is None:
            break
        assert time.monotonic() < deadline, proc
        time.sleep(0.05)
    assert proc["restarts"] == 1
    assert http_get(f"http://{address}:{PORT}/")[0] == 200

    fresh.client.kill_instance_process(server_id, "SIGTERM")  # a clean stop: on-failure does not restart
    fresh.client.wait_for_server(server_id, status="ACTIVE", boot_status="exited", timeout_s=10)
    time.sleep(0.5)
    [proc] = fresh.client.boot_report(server_id)["processes"]
    assert (proc["restarts"], proc["returncode"]) == (1, -15)


def test_an_address_whose_port_is_taken_on_the_host_is_skipped(fresh: DoubleHandle) -> None:
    import socket

    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.2", PORT))
        squatter.listen()
        server_id = create(fresh, "not-on-2", user_data())
        fresh.client.wait_for_server(server_id, status="ACTIVE", boot_status="running", timeout_s=20)
        address = fresh.client.boot_report(server_id)["address"]
        assert address not in ("127.0.0.1", "127.0.0.2")
        assert http_get(f"http://{address}:{PORT}/")[0] == 200


@pytest.fixture
def fake_hub_api() -> Iterator[str]:
    """Just enough of the hub's API for jupyterhub-singleuser's start-up check (GET /hub/api)."""
    import http.server
    import json
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-JupyterHub-Version", "6.1.1")
            self.end_headers()
            self.wfile.write(json.dumps({"version": "6.1.1"}).encode())

        def log_message(self, *args: Any) -> None:
            pass

    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=hub.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{hub.server_address[1]}/hub/api"
    finally:
        hub.shutdown()
        hub.server_close()


def test_real_jupyterhub_singleuser_starts_on_the_instance_address(fresh: DoubleHandle, fake_hub_api: str) -> None:
    port = PORT + 1
    env = {
        "JUPYTERHUB_API_TOKEN": "t0ken",
        "JUPYTERHUB_API_URL": fake_hub_api,
        "JUPYTERHUB_USER": "alice",
        "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
        "JUPYTERHUB_SERVICE_URL": f"http://0.0.0.0:{port}/user/alice/",
        "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-alice",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": "/user/alice/oauth_callback",
        "JUPYTERHUB_BASE_URL": "/",
    }
    env_file = "".join(f'{k}="{v}"\n' for k, v in env.items())
    unit = UNIT.replace(
        f"ExecStart=python3 -m http.server --bind 0.0.0.0 {PORT}",
        f'WorkingDirectory=/home/alice\nExecStart=jupyterhub-singleuser "--ip=0.0.0.0" "--port={port}"',
    )
    server_id = create(fresh, "singleuser", user_data(unit=unit, env_file=env_file))
    fresh.client.wait_for_server(server_id, status="ACTIVE", boot_status="running", timeout_s=20)
    address = fresh.client.boot_report(server_id)["address"]
    try:
        status, body = http_get(f"http://{address}:{port}/user/alice/api", timeout_s=60)
    finally:
        log = fresh.client.instance_log(server_id)
    assert status == 200 and b'"version"' in body, log
    assert f"http://{address}:{port}/user/alice/" in log


def test_no_run_per_instance_by_name(fresh: DoubleHandle) -> None:
    fresh.client.set_config(no_run_names="^bench-")
    ran = create(fresh, "real-1", user_data())
    stood_in = create(fresh, "bench-1", user_data())
    assert fresh.client.wait_for_server(ran, status="ACTIVE", boot_status="running", timeout_s=20)["no_run"] is False
    assert fresh.client.wait_for_server(stood_in, status="ACTIVE", boot_status="stand-in", timeout_s=20)["no_run"]
