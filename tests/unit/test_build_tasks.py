"""`invoke build-image` refuses what it cannot build with a clear message, before any download or VM.

Run as a user runs it (`python -m invoke` in the repository); with `--base local` nothing leaves the machine.
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def _invoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_ubuntu_says_why_it_cannot_be_built_here_without_contacting_its_host():
    r = _invoke("build-image", "--os", "ubuntu-22.04", "--base", "local")
    assert r.returncode == 2, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "ubuntu-22.04 cannot be built on this machine" in out
    assert "was not tried (--base local" in out
    assert "no local base recipe for ubuntu-22.04" in out
    assert "invoke validate --os ubuntu-22.04" in out  # what still works
    assert "Traceback" not in out


def test_an_unknown_base_mode_is_refused():
    r = _invoke("build-image", "--os", "debian-12", "--base", "cloudy")
    assert r.returncode == 1
    assert "--base (or LCS_IMAGE_BASE) must be auto, official or local, not 'cloudy'" in r.stdout + r.stderr


def test_an_unknown_os_is_refused():
    r = _invoke("build-image", "--os", "windows-11", "--base", "local")
    assert r.returncode == 1
    assert "unknown --os 'windows-11'" in r.stdout + r.stderr
