"""The pinned wheels of the guest's Python, downloaded on the host and checked against the locks' hashes."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
from pathlib import Path

from .common import OUTPUT_DIR, PACKER_DIR, ROOT, STACK, q, sha256


def lock_path(os_name: str) -> Path:
    return PACKER_DIR / "files" / f"requirements-{os_name}.lock"


def locked_versions(os_name: str) -> dict[str, str]:
    text = lock_path(os_name).read_text()
    return {d: m[1] for d in STACK if (m := re.search(rf"^{d}==([^\s;\\]+)", text, flags=re.M))}


def wheelhouse_locks(os_name: str) -> list[Path]:
    return [lock_path(os_name), PACKER_DIR / "files" / "build-tools.lock"]


def wheelhouse_dir(os_name: str) -> Path:
    """Where the wheelhouse of the current locks lives (named by their digest)."""
    digest = hashlib.sha256(b"".join(sha256(lock).encode() for lock in wheelhouse_locks(os_name))).hexdigest()
    return OUTPUT_DIR / "wheelhouse" / f"{os_name}-{digest[:12]}"


def ensure_wheelhouse(c, os_name: str, vars_: dict[str, str]) -> Path:
    """The pinned wheels for the guest's Python (the Jupyter lock plus the build-tools lock), downloaded on
    the host and checked against the locks' hashes. Cached per lock content."""
    locks = wheelhouse_locks(os_name)
    dest = wheelhouse_dir(os_name)
    digest = dest.name.rsplit("-", 1)[1]
    if (dest / ".complete").exists():
        print(f"wheelhouse: {dest.relative_to(ROOT)} (cached)")
        return dest
    pyver = vars_["guest_python_version"]
    major, minor, _ = pyver.split(".")
    glibc_minor = int(vars_["guest_glibc_version"].split(".")[1])
    platforms = [f"manylinux_2_{n}_x86_64" for n in range(glibc_minor, 16, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # --isolated: only PyPI and the lock count, not this host's pip configuration (extra indexes, find-links)
    cert = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    cert_opt = f"--cert {q(cert)} " if cert else ""
    for lock in locks:
        cmd = (
            f"{q(sys.executable)} -m pip --isolated download {cert_opt}--quiet --no-deps --require-hashes "
            f"--only-binary=:all: --implementation cp --python-version {q(pyver)} --abi cp{major}{minor} "
            + " ".join(f"--platform {p}" for p in platforms)
            + f" --dest {q(tmp)} -r {q(lock)}"
        )
        print(f"wheelhouse: downloading the wheels of {lock.relative_to(ROOT)} for Python {pyver}", flush=True)
        c.run(cmd, echo=True, pty=False)
    (tmp / ".complete").write_text(digest + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
