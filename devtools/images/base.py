"""The local base image: a Debian qcow2 built from packages (mmdebstrap), where no cloud image downloads."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from invoke import Exit

from .common import BASE_RECIPES, OUTPUT_DIR, ROOT, need, need_root, now, os_vars, q, sha256, timed, use_pty


def base_paths(os_name: str) -> tuple[Path, Path]:
    """The base qcow2 and its stamp (what it was built from)."""
    base = OUTPUT_DIR / "base" / f"{os_name}.qcow2"
    return base, base.with_suffix(".json")


def base_valid(c, os_name: str) -> tuple[bool, str]:
    base, stamp = base_paths(os_name)
    if not base.exists() or not stamp.exists():
        return False, "no base built yet"
    meta = json.loads(stamp.read_text())
    if meta.get("recipe_sha256") != sha256(BASE_RECIPES[os_name]):
        return False, "the recipe changed since the base was built"
    if c.run(f"qemu-img check -q {q(base)}", hide=True, warn=True).failed:
        return False, "qemu-img check fails"
    if meta.get("sha256") != sha256(base):
        return False, "the base file changed since it was built"
    return True, f"built {meta.get('date')}"


def build_base(c, os_name: str, force: bool = False) -> Path:
    """The valid base of ``os_name``, built now if there is none (or ``force``)."""
    if os_name not in BASE_RECIPES:
        vars_ = os_vars(os_name)
        raise Exit(
            f"no local base recipe for {os_name}: its build starts from the official cloud image "
            f"{vars_.get('base_image_url')}"
        )
    need("mmdebstrap", "qemu-img", "sfdisk", "partx", "losetup", "fsfreeze", "mkfs.ext4", "chroot")
    base, stamp = base_paths(os_name)
    ok, why = base_valid(c, os_name)
    if ok and not force:
        print(f"build-base: {base.relative_to(ROOT)} is valid ({why}); --force rebuilds it")
        return base
    need_root("build-base")
    print(f"build-base: building {base.relative_to(ROOT)} ({why})", flush=True)
    base.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lcs-base-", dir="/var/tmp") as work:
        seconds = timed(c, f"sh {q(BASE_RECIPES[os_name])} {q(base)} {q(work)}", echo=True, pty=use_pty())
    c.run(f"qemu-img check -q {q(base)}", hide=True)
    stamp.write_text(
        json.dumps(
            {
                "os": os_name,
                "date": now().isoformat(),
                "sha256": sha256(base),
                "recipe_sha256": sha256(BASE_RECIPES[os_name]),
                "build_seconds": round(seconds),
            },
            indent=2,
        )
    )
    print(f"build-base: {base.relative_to(ROOT)} built in {seconds:.0f} s")
    return base
