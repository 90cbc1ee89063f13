"""The dev cloud fails early and clearly on a nearly full disk, and a daemon that does not start says why.

Ceph's monitor refuses to start (exit 28, ENOSPC) when its disk has less free space than a share of its
size, and writes the reason only to its own log: `up` then said no more than "ceph-mon did not start".
These tests run the real shell functions of devcloud/lib (common.sh, services.sh) with bash.
"""

from __future__ import annotations

import os

from tests.unit.devcloud_shell import devcloud_sh


def _free_gib() -> int:
    st = os.statvfs("/var/lib")
    return st.f_bavail * st.f_frsize // 2**30


def test_up_refuses_a_disk_with_less_free_space_than_required_and_names_the_large_directories(tmp_path):
    need = _free_gib() + 10
    r = devcloud_sh(tmp_path, "require_free_space; echo passed", DEVCLOUD_MIN_FREE_GIB=str(need))
    assert r.returncode == 1
    assert "passed" not in r.stdout
    assert f"GiB free on the disk of /var/lib; 'up' needs {need} GiB (DEVCLOUD_MIN_FREE_GIB)" in r.stderr
    assert "Nova removes base images unused for an hour" in r.stderr


def test_up_accepts_a_disk_with_the_required_free_space(tmp_path):
    r = devcloud_sh(tmp_path, "require_free_space; echo passed", DEVCLOUD_MIN_FREE_GIB="0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["passed"]


def test_a_daemon_that_does_not_start_shows_the_end_of_its_log(tmp_path):
    # a ceph-mon that fails as the real one does on a nearly full disk; is_running is replaced so that a
    # monitor already running on this machine (the dev cloud's) does not count, and the real one never runs
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "ceph-mon"
    fake.write_text(
        "#!/bin/sh\n"
        "echo 'error: monitor data filesystem reached concerning levels of available storage space' >&2\n"
        "exit 28\n"
    )
    fake.chmod(0o755)
    # common.sh sets PATH itself: the fake goes first after it
    r = devcloud_sh(tmp_path, f'PATH="{bindir}:$PATH"; is_running() {{ return 1; }}; start_one ceph-mon || echo failed')
    assert r.stdout.split() == ["failed"]
    assert "devcloud: ceph-mon did not start" in r.stderr
    assert "  | error: monitor data filesystem reached concerning levels" in r.stderr
