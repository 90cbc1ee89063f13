"""What every step of the image pipeline shares: where things are, the OS data, small host helpers."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shlex
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from invoke import Exit

ROOT = Path(__file__).resolve().parents[2]
PACKER_DIR = ROOT / "images" / "packer"
OUTPUT_DIR = ROOT / "images" / "output"
TESTS_DIR = ROOT / "tests" / "images"

OSES = ("debian-12", "ubuntu-22.04")
#: OSes whose base can be built here from packages when the official cloud image is out of reach
BASE_RECIPES = {"debian-12": PACKER_DIR / "base" / "debian-12.sh"}
STACK = ("jupyterhub", "jupyterlab", "numpy", "matplotlib")

#: command -> Debian package that provides it
TOOLS = {
    "packer": "packer",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap",
    "cloud-localds": "cloud-image-utils",
    "shellcheck": "shellcheck",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "sfdisk": "fdisk",
    "partx": "util-linux",
    "losetup": "mount",
    "fsfreeze": "util-linux",
    "mkfs.ext4": "e2fsprogs",
    "chroot": "coreutils",
}


def need(*tools: str) -> None:
    """Exit naming the Debian package of each missing tool."""
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pkgs = " ".join(sorted({TOOLS.get(t, t) for t in missing}))
        raise Exit(f"{', '.join(missing)} not found: install it with `apt-get install {pkgs}` (./bootstrap does)")


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise Exit(f"{what} needs root (loop devices, mounts, chroot): run it as root")


def use_pty() -> bool:
    """A pty only when a person watches: CI has no tty."""
    return sys.stdout.isatty()


def q(value: object) -> str:
    return shlex.quote(str(value))


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git_commit(c) -> str:
    r = c.run(f"git -C {q(ROOT)} rev-parse HEAD", hide=True, warn=True)
    sha = r.stdout.strip() if r.ok else ""
    return sha if re.fullmatch(r"[0-9a-f]{40}", sha) else "unknown"


def os_vars(os_name: str) -> dict[str, str]:
    """The `key = "value"` lines of vars/<os>.pkrvars.hcl (the OS data shared with Packer)."""
    if os_name not in OSES:
        raise Exit(f"unknown --os {os_name!r}: choose one of {', '.join(OSES)}")
    text = (PACKER_DIR / "vars" / f"{os_name}.pkrvars.hcl").read_text()
    return dict(re.findall(r'^\s*([a-z_]+)\s*=\s*"([^"]*)"', text, flags=re.M))


def probe_url(url: str, timeout_s: float = 15) -> str | None:
    """None when ``url`` answers; else why not, in words."""
    req = urllib.request.Request(url, method="HEAD")  # noqa: S310 - http(s) URLs from the var files
    try:
        with urllib.request.urlopen(req, timeout=timeout_s):  # noqa: S310
            return None
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code} {e.reason}"
    except (urllib.error.URLError, OSError) as e:
        return str(getattr(e, "reason", e))


def timed(c, cmd: str, **kw) -> float:
    start = time.monotonic()
    c.run(cmd, **kw)
    return time.monotonic() - start
