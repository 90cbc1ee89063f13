"""This machine's side of a test run: free loopback ports, and stopping a process the run started (and what it
started that outlived it)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

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


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, ppid, ...), or None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def children(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid`` right now, each with its start time (Linux ``/proc``)."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None and int(fields[1]) == pid:
            found[int(entry.name)] = fields[19]
    return found


def _running(pid: int, started: str) -> bool:
    """Whether the very process ``pid`` that started at ``started`` still runs (not a zombie, not a new pid)."""
    fields = _stat(pid)
    return fields is not None and fields[19] == started and fields[0] != "Z"


def stop_leftovers(procs: dict[int, str], timeout_s: float = 5) -> list[int]:
    """Stop those of ``procs`` (from :func:`children`, taken before their parent stopped) that still run:
    SIGTERM, then SIGKILL after ``timeout_s``. The pids that were still running."""
    left = [p for p, started in procs.items() if _running(p, started)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in left:
            if _running(p, procs[p]):
                with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                    os.kill(p, sig)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(_running(p, procs[p]) for p in left):
            time.sleep(0.1)
    return left
