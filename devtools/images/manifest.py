"""The build side of images/manifest.json: load, save, new entries, published copies.

The schema and its checks are the spawner's (``libcloudspawner.manifest``): the catalog reads what this
writes through the same code.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from invoke import Exit

from libcloudspawner import manifest as schema
from libcloudspawner.manifest import SCHEMA, ManifestError

from .common import ROOT, STACK, now

__all__ = [
    "MANIFEST_PATH", "SCHEMA", "append_entry", "build_date", "default_image", "find_entry", "load_manifest",
    "manifest_entry", "published", "record_published", "save_manifest",
]  # fmt: skip

MANIFEST_PATH = ROOT / "images" / "manifest.json"


def load_manifest(path: Path | None = None) -> dict:
    """The manifest (empty if there is none yet); a file of another schema or shape is an Exit naming it."""
    path = path or MANIFEST_PATH  # looked up at call time: tests point it elsewhere
    try:
        return schema.load_manifest(path, missing_ok=True)
    except ManifestError as e:
        raise Exit(f"{e}: fix or move it away") from None


def save_manifest(data: dict, path: Path | None = None) -> None:
    """Write atomically (the spawner may be reading it)."""
    schema.save_manifest(data, path or MANIFEST_PATH)


def build_date(date: dt.datetime) -> str:
    """A build's date as the manifest and the image's ``lcs_build_date`` property write it (UTC, ``Z``)."""
    return date.isoformat().replace("+00:00", "Z")


def manifest_entry(
    *, name: str, os_name: str, versions: dict, date: dt.datetime, git_commit: str, builder: str,
    image: Path | None, sizes: dict, sha256: str | None, min_disk_gb: int, min_ram_mb: int,
    packages: dict | None = None, accounts: list | None = None, security_upgrades: str | None = None,
) -> dict:  # fmt: skip
    """One build, in the schema the spawner's catalog reads (``packages``, ``accounts`` and
    ``security_upgrades`` as read from the image, when known)."""
    known = {"packages": packages, "accounts": accounts, "security_upgrades": security_upgrades}
    pretty = {"debian": "Debian", "ubuntu": "Ubuntu"}
    family, _, release = os_name.partition("-")
    return schema.make_entry(
        name=name,
        os=os_name,
        display_name=f"{pretty.get(family, family.title())} {release} · JupyterLab {versions['jupyterlab']}",
        date=build_date(date),
        git_commit=git_commit,
        versions={k: versions[k] for k in ("python", *STACK)},
        format="qcow2",
        path=image.relative_to(ROOT).as_posix() if image else None,
        size_bytes=sizes.get("size_bytes"),
        virtual_size_bytes=sizes.get("virtual_size_bytes"),
        compressed_size_bytes=sizes.get("compressed_size_bytes"),
        sha256=sha256,
        builder=builder,
        min_disk_gb=min_disk_gb,
        min_ram_mb=min_ram_mb,
        **{k: v for k, v in known.items() if v is not None},
    )


def append_entry(entry: dict) -> None:
    """Record one more build."""
    data = load_manifest()
    data["images"].append(entry)
    save_manifest(data)


def find_entry(data: dict, image: Path) -> dict | None:
    """The newest entry of ``image`` (a path inside the repository or not)."""
    rel = image.resolve().relative_to(ROOT).as_posix() if image.resolve().is_relative_to(ROOT) else str(image)
    for entry in reversed(data["images"]):
        if entry.get("path") == rel:
            return entry
    return None


def default_image() -> Path:
    """The newest build whose qcow2 is still on disk."""
    for entry in reversed(load_manifest()["images"]):
        if entry.get("path") and (ROOT / entry["path"]).exists():
            return ROOT / entry["path"]
    raise Exit("no built image in images/manifest.json: run `invoke build-image` or pass --image PATH")


def published(image_id: str, name: str) -> dict:
    """A manifest entry's record of one cloud's copy (``published.<cloud>``)."""
    return schema.published_record(image_id, name, now().isoformat())


def record_published(data: dict, entry: dict, cloud: str, image_id: str, name: str) -> None:
    entry.setdefault("published", {})[cloud] = published(image_id, name)
    save_manifest(data)
