"""This machine's side of a test run: free loopback ports, and stopping a process the run started."""

from __future__ import annotations

import signal
import socket
import subprocess

# ports a real OpenStack and other tiers use on this machine: never pick them
RESERVED_PORTS = {5000, 8774, 8778, 9292, 9696, 8081, 8000}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (and none of ``RESERVED_PORTS``)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port


def stop_process(proc: subprocess.Popen | None, timeout_s: float) -> None:
    """Stop this one process (its own PID only): SIGTERM, then SIGKILL once ``timeout_s`` has passed."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
