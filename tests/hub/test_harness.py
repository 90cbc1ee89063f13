"""The test kit's hub leaves nothing running: a hub stopped while it waits for a managed service to exit (its
stop's deadline passed, so it was killed) has that service stopped too."""

from __future__ import annotations

import sys

import pytest

from testkit.hub import Hub, original_config
from testkit.wait import wait_until

pytestmark = pytest.mark.hub

STUBBORN = (
    "import os, signal, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)"
)


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_killed_hub_leaves_none_of_its_services_running(tmp_path, double):
    pid_file = tmp_path / "service.pid"
    workdir = tmp_path / "hub"
    workdir.mkdir()
    service = {"name": "stubborn", "command": [sys.executable, "-c", STUBBORN, str(pid_file)]}
    hub = Hub(workdir, double, original_config(double.url), f"c.JupyterHub.services.append({service!r})\n")
    hub.start()
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout_s=30, what="the service to run")
        pid = int(pid_file.read_text())
        assert running(pid)
    finally:
        hub.stop(timeout_s=2)  # the hub waits longer than that for a service that ignores SIGINT and SIGTERM
    assert hub.process.returncode == -9  # killed: JupyterHub could not stop its service itself
    assert not running(pid)
    [line] = [x for x in hub.log_text().splitlines() if x.startswith("[testkit] processes of the stopped hub")]
    assert str(pid) in line.split("stopped: ")[1].strip("[]").split(", ")
