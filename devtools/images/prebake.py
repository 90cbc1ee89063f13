"""The host-speed pre-stage: the heavy provisioning scripts run in a chroot of the base before Packer.

Under software emulation installing the stack in the guest takes many minutes; here it takes seconds.
Packer then boots the result and runs every script again: they are idempotent, so the guest only checks
the installed stack against the lock, configures GRUB and cleans up.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

from . import disk
from .common import OUTPUT_DIR, PACKER_DIR, ROOT, need, q, sha256
from .wheelhouse import lock_path

#: the provisioning scripts that also run in the chroot pre-stage (GRUB and cleanup need the booted guest)
PRESTAGE_SCRIPTS = (
    "common/10-packages.sh",
    "common/15-security-upgrades.sh",
    "{family}/20-os.sh",
    "common/30-jupyter.sh",
)
#: the build directory inside the chroot, as the scripts expect it (LCS_BUILD_DIR)
CHROOT_BUILD_DIR = "/tmp/lcs-build"


def prebake(c, base: Path, os_name: str, vars_: dict[str, str], wheelhouse: Path) -> Path:
    """``base`` with the pre-stage scripts run in it, as a qcow2 cached per base, locks, helpers, patches and
    scripts."""
    need("qemu-img", "losetup", "partx", "fsfreeze", "chroot")
    scripts = [PACKER_DIR / "scripts" / s.format(family=vars_["os_family"]) for s in PRESTAGE_SCRIPTS]
    locks = [lock_path(os_name), PACKER_DIR / "files" / "build-tools.lock"]
    helpers = [PACKER_DIR / "files" / "lcs_startup.py", PACKER_DIR / "files" / "lcs_patches.py"]
    patches = sorted((PACKER_DIR / "patches").rglob("*.patch"))
    inputs = [base, *locks, *helpers, *patches, *scripts]
    key = hashlib.sha256("".join(sha256(p) for p in inputs).encode()).hexdigest()[:12]
    out = OUTPUT_DIR / "prebaked" / f"{os_name}-{key}.qcow2"
    if out.exists() and c.run(f"qemu-img check -q {q(out)}", hide=True, warn=True).ok:
        print(f"prebake: {out.relative_to(ROOT)} (cached)")
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    for old in out.parent.glob(f"{os_name}-*.qcow2"):
        old.unlink()
    t0 = time.monotonic()
    print(f"prebake: running {', '.join(s.name for s in scripts)} in a chroot of {base.name}", flush=True)
    with disk.mounted(c, base, writable=True, what="the chroot pre-stage (--prebake)") as mounted:
        build = mounted.root / CHROOT_BUILD_DIR.lstrip("/")
        shutil.copytree(wheelhouse, build / "wheelhouse")
        shutil.copy(locks[0], build / "requirements.lock")
        shutil.copy(locks[1], build / "build-tools.lock")
        for helper in helpers:
            shutil.copy(helper, build / helper.name)
        shutil.copytree(PACKER_DIR / "patches", build / "patches")
        (build / "scripts").mkdir()
        with disk.system_dirs(c, mounted.root):
            for script in scripts:
                shutil.copy(script, build / "scripts" / script.name)
                c.run(
                    f"env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "
                    f"DEBIAN_FRONTEND=noninteractive LCS_BUILD_DIR={CHROOT_BUILD_DIR} "
                    f"chroot {q(mounted.root)} sh -eu {CHROOT_BUILD_DIR}/scripts/{script.name}",
                    echo=True,
                    pty=False,
                )
        shutil.rmtree(build)
        disk.save_qcow2(c, mounted, out)
    print(f"prebake: {out.relative_to(ROOT)} in {time.monotonic() - t0:.0f} s")
    return out
