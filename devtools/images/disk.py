"""A qcow2 image's root filesystem on the host: one loop-mount, read-only or writable, always undone.

The image itself is never mounted: it is converted to a raw file first, and a writable mount's result is
converted back (``save_qcow2``) while the filesystem is frozen.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from invoke import Exit

from .common import need, need_root, q

#: the host directories a chroot of the image needs
SYSTEM_DIRS = ("dev", "proc", "sys")


@dataclass(frozen=True)
class MountedDisk:
    root: Path  # the image's first partition, mounted
    raw: Path  # the raw copy behind the loop device


def _wait_for(device: str, deadline_s: float = 15) -> None:
    deadline = time.monotonic() + deadline_s
    while not Path(device).exists():
        if time.monotonic() > deadline:
            raise Exit(f"{device} did not appear after partx -a")
        time.sleep(0.5)


@contextlib.contextmanager
def mounted(c, image: Path, *, writable: bool = False, what: str = "mounting an image") -> Iterator[MountedDisk]:
    """``image``'s first partition mounted from a raw copy (read-only unless ``writable``), in a scratch
    directory under /var/tmp; unmounted, detached and removed whatever happens."""
    need_root(what)
    need("qemu-img", "losetup", "partx")
    work = Path(tempfile.mkdtemp(prefix="lcs-disk-", dir="/var/tmp"))
    disk = MountedDisk(root=work / "root", raw=work / "disk.raw")
    disk.root.mkdir()
    loop = ""
    try:
        c.run(f"qemu-img convert -O raw {q(image)} {q(disk.raw)}", hide=True)
        loop = c.run(f"losetup {'' if writable else '-r '}-f --show {q(disk.raw)}", hide=True).stdout.strip()
        c.run(f"partx -d {q(loop)}", hide=True, warn=True)
        c.run(f"partx -a {q(loop)}", hide=True)
        _wait_for(f"{loop}p1")
        options = "" if writable else "-o ro,noload "
        c.run(f"mount {options}{q(loop + 'p1')} {q(disk.root)}", hide=True)
        yield disk
    finally:
        c.run(f"umount {q(disk.root)}", hide=True, warn=True)
        if loop:
            c.run(f"partx -d {q(loop)}", hide=True, warn=True)
            c.run(f"losetup -d {q(loop)}", hide=True, warn=True)
        shutil.rmtree(work, ignore_errors=True)


def _unbind(c, root: Path, *, strict: bool) -> None:
    for d in SYSTEM_DIRS:
        c.run(f"umount -R {q(root / d)}", hide=True, warn=not strict)


@contextlib.contextmanager
def system_dirs(c, root: Path) -> Iterator[None]:
    """/dev, /proc and /sys bound into ``root`` for a chroot (slave mounts: nothing propagates back).
    Unbound on the way out; after a success, an unbind that fails is an error (the disk is saved next)."""
    c.run(f"mount --make-rshared {q(root)}", hide=True)
    try:
        for d in SYSTEM_DIRS:
            c.run(f"mount --rbind /{d} {q(root / d)} && mount --make-rslave {q(root / d)}", hide=True)
        yield
    except BaseException:
        _unbind(c, root, strict=False)
        raise
    try:
        _unbind(c, root, strict=True)
    except Exception:
        _unbind(c, root, strict=False)
        raise


def save_qcow2(c, disk: MountedDisk, dest: Path) -> None:
    """The writable mount's filesystem as a qcow2 at ``dest``: trimmed, then frozen while it is copied (flushed
    and consistent even if another mount namespace still pins the mount). Written beside ``dest`` first."""
    c.run(f"fstrim {q(disk.root)}", hide=True, warn=True)
    c.run(f"sync -f {q(disk.root)} && fsfreeze -f {q(disk.root)}", hide=True)
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        c.run(f"qemu-img convert -O qcow2 {q(disk.raw)} {q(tmp)}", hide=True)
    finally:
        c.run(f"fsfreeze -u {q(disk.root)}", hide=True, warn=True)
    tmp.rename(dest)
