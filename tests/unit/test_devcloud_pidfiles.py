"""The dev cloud trusts a service's pid file only when it names that service (devcloud/lib/services.sh).

Pids get reused: when the daemons die without their init scripts (a session, container or machine
ends), the pid files stay in /run and can later name an unrelated process. Debian's init scripts trust
the file alone, so `start` would skip the service and `stop` would kill the stranger. That killed
MariaDB in a CI run (neutron-api's stale file named the new mariadbd). These tests run the real shell
functions against pid files in a temporary run directory and real processes started here.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.devcloud_shell import devcloud_sh


@pytest.fixture
def spawn() -> Iterator:
    """Start a sleeping process with the given extra arguments; every one is killed at the end."""
    procs: list[subprocess.Popen] = []

    def start(*argv: str) -> subprocess.Popen:
        # argv lands in /proc/PID/cmdline after the -c program, as a daemon's arguments would
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *argv])
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait(timeout=10)


def _pidfile(tmp_path: Path, rel: str, pid: int) -> Path:
    f = tmp_path / "run" / rel
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(f"{pid}\n")
    return f


def test_a_pid_file_naming_another_process_is_stale_removed_and_its_process_spared(tmp_path, spawn):
    stranger = spawn("--port", "3306")  # stands for the mariadbd that got neutron-server's old pid
    f = _pidfile(tmp_path, "neutron/neutron-server.pid", stranger.pid)
    r = devcloud_sh(
        tmp_path, "if is_running neutron-api; then echo running; else echo stopped; fi; stop_one neutron-api"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["stopped"]
    assert not f.exists()
    with pytest.raises(subprocess.TimeoutExpired):  # still alive a second later: stop_one did not kill it
        stranger.wait(timeout=1)
    log = (tmp_path / "work" / "neutron-api.start.log").read_text()
    assert f"pid {stranger.pid} is not neutron-api" in log


@pytest.mark.parametrize(
    ("service", "rel", "argv"),
    [
        ("nova-conductor", "nova/nova-conductor.pid", ["/usr/bin/nova-conductor", "--config-file=/etc/nova/nova.conf"]),
        ("keystone", "keystone/keystone.pid", ["--http-socket", ":5000", "--ini", "/etc/keystone/keystone-uwsgi.ini"]),
        ("neutron-api", "neutron/neutron-server.pid", ["--ini", "/etc/neutron/neutron-api-uwsgi.ini", "--pyargv", "x"]),
    ],
)
def test_a_pid_file_naming_the_service_is_trusted(tmp_path, spawn, service, rel, argv):
    daemon = spawn(*argv)
    f = _pidfile(tmp_path, rel, daemon.pid)
    r = devcloud_sh(tmp_path, f"own_pid {service}; is_running {service} && echo running")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(daemon.pid), "running"]
    assert f.exists()


def test_a_similar_name_is_not_the_service(tmp_path, spawn):
    other = spawn("/usr/bin/nova-api-metadata", "--config-file=/etc/nova/nova.conf")
    f = _pidfile(tmp_path, "nova/nova-api.pid", other.pid)
    r = devcloud_sh(tmp_path, "is_running nova-api || echo stopped")
    assert r.stdout.split() == ["stopped"], r.stderr
    assert not f.exists()


def test_a_pid_file_of_a_dead_process_is_removed(tmp_path, spawn):
    gone = spawn()
    gone.kill()
    gone.wait(timeout=10)
    f = _pidfile(tmp_path, "glance/glance-api.pid", gone.pid)
    r = devcloud_sh(tmp_path, "is_running glance-api || echo stopped")
    assert r.stdout.split() == ["stopped"], r.stderr
    assert not f.exists()
