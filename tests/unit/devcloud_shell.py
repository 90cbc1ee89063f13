"""Run the dev cloud's real shell functions (devcloud/lib/common.sh and services.sh) in bash, for unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

LIB = Path(__file__).resolve().parents[2] / "devcloud" / "lib"


def devcloud_sh(tmp_path: Path, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run SCRIPT in bash with common.sh and services.sh sourced (run dir and work dir in tmp; ENV added)."""
    base = {"DEVCLOUD_RUN_DIR": str(tmp_path / "run"), "DEVCLOUD_WORK": str(tmp_path / "work"), "PATH": "/usr/bin:/bin"}
    prelude = f'set -euo pipefail; source "{LIB}/common.sh"; source "{LIB}/services.sh"\n'
    return subprocess.run(
        ["bash", "-c", prelude + script], env={**base, **env}, capture_output=True, text=True, timeout=60
    )
