"""The warm pool's settings and bookkeeping, pure (no cloud call); the pool itself is :mod:`pool`.

``warm_pool`` entries name a profile (or an image and a size) with ``min`` idle VMs to keep and ``max`` pool
VMs at most. A target is identified by its key (the profile's slug, or ``image/size``) and a fingerprint of
everything its VMs are booted with (image, size, network, security groups, key pair, metadata, config drive,
the agent's files): :func:`plan` says which targets grow and which idle VMs are drained. :class:`ClaimRecords`
is the durable record of claims under way, beside the hub's database.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from traitlets import Dict, Float, HasTraits, Integer, List, TraitError, validate

from . import handoff, hubstate, naming, userdata

CLAIMS_FILE = "libcloudspawner-pool-claims.json"
KEYS_DIRECTORY = "libcloudspawner-pool"
#: a key directory without a VM is removed after this long (its create failed or was lost)
KEYS_ORPHAN_SECONDS = 600.0
BACKOFF_MAX_SECONDS = 300.0
#: what a pool VM's creation depends on beyond image and size (profile overrides of these matter)
CREATE_SETTINGS = ("userserver_net", "security_groups", "userserver_keyname", "instance_metadata", "config_drive")


class PoolSettings(HasTraits):
    """The warm pool's traits (mixed into ``LibcloudSpawner``)."""

    warm_pool = List(
        Dict(),
        help="""
        Warm pool targets, off when empty. Each is a dict: `profile` (a profile's slug) or `image` and `size`
        (cloud names, as in `userserver_images` / `userserver_sizes`), `min` (idle VMs kept booted) and
        `max` (most pool VMs of this target; default `min`). A spawn of that profile (or image and size)
        takes a pool VM when one is ready, and boots a new one otherwise.
        """,
    ).tag(config=True)

    pool_agent_port = Integer(
        9443, help="TCP port of the pool agent on pool VMs (mutual TLS; the hub must reach it, like `port`)."
    ).tag(config=True)
    pool_create_interval_seconds = Float(
        5.0, help="At most one pool VM is created per this many seconds (a bounded create rate)."
    ).tag(config=True)
    pool_handoff_timeout_seconds = Float(
        60.0, help="How long a claim waits for the pool VM's agent to take the user before booting a new VM."
    ).tag(config=True)

    @validate("warm_pool")
    def _validate_warm_pool(self, proposal):
        try:
            return [normalize_entry(e) for e in proposal.value]
        except ValueError as e:
            raise TraitError(str(e)) from None


def normalize_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One ``warm_pool`` entry, checked: ``ValueError`` naming what is wrong."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"warm_pool entries are dicts, not {entry!r}")
    unknown = set(entry) - {"profile", "image", "size", "min", "max"}
    if unknown:
        raise ValueError(f"warm_pool: unknown keys {sorted(unknown)} (allowed: profile, image, size, min, max)")
    if bool(entry.get("profile")) == bool(entry.get("image") or entry.get("size")):
        raise ValueError("warm_pool: each entry names either a profile or an image and a size")
    if not entry.get("profile") and not (entry.get("image") and entry.get("size")):
        raise ValueError("warm_pool: an entry without a profile needs both image and size")
    low = entry.get("min", 0)
    high = entry.get("max", low)
    if not isinstance(low, int) or not isinstance(high, int) or not 0 <= low <= high <= 1000:
        raise ValueError(f"warm_pool: min and max must be integers with 0 <= min <= max <= 1000, not {low}, {high}")
    return {**dict(entry), "min": low, "max": high}


@dataclass(frozen=True)
class Target:
    """What one warm pool entry keeps: VMs of ``image`` and ``size`` booted with ``create`` settings."""

    key: str
    image: str
    size: str
    create: Mapping[str, Any]
    min: int
    max: int
    fingerprint: str


def fingerprint(image: str, size: str, create: Mapping[str, Any], agent_port: int) -> str:
    """A short digest of everything a pool VM is booted with (the agent's own files included)."""
    agent = userdata.load_template(None, name=handoff.POOL_TEMPLATE) + userdata.load_template(
        None, name=handoff.AGENT_SOURCE
    )
    data = {"image": image, "size": size, "create": dict(create), "port": agent_port,
            "agent": hashlib.sha256(agent.encode()).hexdigest()}  # fmt: skip
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def selection_key(selection: Any) -> str:
    """The pool key of a user's selection: its profile's slug, else ``image/size``."""
    return selection.profile.slug if selection.profile is not None else f"{selection.image}/{selection.size}"


def create_settings(source: Any, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The settings a VM is created with, from ``source``'s traits and a profile's ``overrides``."""
    return {name: (overrides or {}).get(name, getattr(source, name)) for name in CREATE_SETTINGS}


def targets(config: Any, catalog: Any) -> list[Target]:
    """The targets of ``config``'s ``warm_pool`` (profiles resolved through ``catalog``)."""
    profiles = {p.slug: p for p in catalog.profiles}
    found = []
    for entry in config.warm_pool:
        if entry.get("profile"):
            profile = profiles.get(entry["profile"])
            if profile is None:
                raise ValueError(f"warm_pool names profile {entry['profile']!r}, which is not configured")
            key, image, size, overrides = profile.slug, profile.image, profile.size, profile.overrides
        else:
            key, image, size, overrides = f"{entry['image']}/{entry['size']}", entry["image"], entry["size"], {}
        create = create_settings(config, overrides)
        found.append(Target(key, image, size, create, entry["min"], entry["max"],
                            fingerprint(image, size, create, config.pool_agent_port)))  # fmt: skip
    return found


def pool_tags(hub_id: str, target: Target, member: str) -> dict[str, str]:
    return {
        naming.TAG_HUB_ID: naming.metadata_value(hub_id),
        naming.TAG_MANAGED_BY: naming.MANAGED_BY,
        naming.TAG_POOL: naming.metadata_value(target.key),
        naming.TAG_POOL_FINGERPRINT: target.fingerprint,
        naming.TAG_POOL_MEMBER: member,
    }


def plan(
    idle: Mapping[str, list[str]], creating: Mapping[str, int], wanted: Iterable[Target]
) -> tuple[list[Target], list[str]]:
    """Pure sizing: which targets need one more VM, and which idle VMs go. ``idle``: pool key + fingerprint
    (``key|fingerprint``) -> ids, oldest first; ``creating``: the same keys -> creates under way."""
    grow: list[Target] = []
    drain: list[str] = []
    wanted_keys = set()
    for t in wanted:
        k = f"{t.key}|{t.fingerprint}"
        wanted_keys.add(k)
        have = idle.get(k, [])
        if len(have) + creating.get(k, 0) < t.min:
            grow.append(t)
        drain += have[max(t.max - creating.get(k, 0), 0) :]
    for k, ids in idle.items():
        if k not in wanted_keys:
            drain += ids
    return grow, drain


class ClaimRecords:
    """Claims under way, in a JSON file beside the hub's database (written with fsync, replaced atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[dict[str, Any]]:
        return hubstate.read_records(self.path, "the warm pool's claim records")

    def _write(self, entries: list[dict[str, Any]]) -> None:
        hubstate.write_records(self.path, entries)

    def add(self, instance_id: str, member: str, server: str) -> None:
        entries = [e for e in self.entries() if e["instance_id"] != instance_id]
        self._write([*entries, {"instance_id": instance_id, "member": member, "server": server, "since": time.time()}])

    def remove(self, instance_id: str) -> None:
        entries = self.entries()
        if any(e["instance_id"] == instance_id for e in entries):
            self._write([e for e in entries if e["instance_id"] != instance_id])
