"""The image tests (tests/images/) run against a built qcow2: offline on its mounted filesystem, then booted
with QEMU and reached over SSH like a user server."""

from __future__ import annotations

import json
import socket
import sys
import tempfile
from pathlib import Path

from invoke import Exit

from . import disk
from .common import ROOT, STACK, TESTS_DIR, need, q, use_pty


def image_versions(c, root: Path) -> dict[str, str]:
    """The Jupyter stack's versions, read from the image itself."""
    code = (
        "import json, platform, importlib.metadata as m; "
        f"print(json.dumps({{'python': platform.python_version(), **{{d: m.version(d) for d in {list(STACK)!r}}}}}))"
    )
    r = c.run(
        f"env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot {q(root)} /opt/jupyter/bin/python -I -c {q(code)}",
        hide=True,
        warn=True,
    )
    if r.failed:
        raise Exit(f"cannot read the Jupyter stack versions from the image: {r.stderr.strip()}")
    return json.loads(r.stdout)


def run_pytest(c, args: list[str], what: str) -> None:
    cmd = f"{q(sys.executable)} -m pytest -p no:cacheprovider -o testpaths= -rA {' '.join(q(a) for a in args)}"
    with c.cd(str(ROOT)):
        r = c.run(cmd, echo=True, warn=True, pty=use_pty(), env={"PYTHONPATH": str(ROOT)})
    if r.exited == 5:
        raise Exit(f"{what}: pytest collected no tests: a test phase that tests nothing is a failure", code=1)
    if r.exited != 0:
        raise Exit(f"{what}: FAILED (pytest exit {r.exited})", code=r.exited or 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline_tests(c, image: Path) -> dict[str, str]:
    with disk.mounted(c, image) as mounted:
        root = mounted.root
        versions = image_versions(c, root)
        run_pytest(c, [str(TESTS_DIR / "test_offline.py"), "--hosts=local://", f"--image-root={root}"], "offline tests")
    return versions


def booted_tests(c, image: Path, accelerator: str, keep_dir: str = "") -> None:
    need("qemu-system-x86_64", "qemu-img", "cloud-localds", "ssh", "ssh-keygen")
    with tempfile.TemporaryDirectory(prefix="lcs-image-test-") as tmp:
        key = Path(tmp) / "id_ed25519"
        c.run(f"ssh-keygen -q -t ed25519 -N '' -C lcs-image-test -f {q(key)}", hide=True)
        ssh_config = Path(tmp) / "ssh_config"
        ssh_config.write_text(
            "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
            "  ConnectTimeout 20\n  ServerAliveInterval 15\n  IdentitiesOnly yes\n"
        )
        ssh_port, su_port = free_port(), free_port()
        args = [
            str(TESTS_DIR / "test_booted.py"),
            str(TESTS_DIR / "test_booted_security.py"),
            f"--hosts=ssh://lcs-test@127.0.0.1:{ssh_port}",
            f"--ssh-config={ssh_config}",
            f"--ssh-identity-file={key}",
            "--sudo",
            f"--image={image}",
            f"--ssh-port={ssh_port}",
            f"--singleuser-port={su_port}",
            f"--accelerator={accelerator}",
            "-s",
        ]
        if keep_dir:
            args.append(f"--vm-workdir={keep_dir}")
        run_pytest(c, args, "booted tests")


def run_image_tests(c, image: Path, accelerator: str, phase: str = "all", keep_dir: str = "") -> dict | None:
    versions = None
    if phase in ("all", "offline"):
        print(f"=== image tests, offline: {image}", flush=True)
        versions = offline_tests(c, image)
    if phase in ("all", "booted"):
        print(f"=== image tests, booted ({accelerator}): {image}", flush=True)
        booted_tests(c, image, accelerator, keep_dir)
    return versions
