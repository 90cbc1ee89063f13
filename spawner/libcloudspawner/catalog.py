"""What users may choose: sizes, images and profiles (pure: no libcloud, no spawner).

Choices come from three places, all configured by the administrator:

- ``userserver_sizes`` / ``userserver_images``: lists of ``(display name, cloud name)`` (the original
  configuration; lists of lists, as JSON or YAML configuration gives them, are accepted too);
- ``profiles``: named presets of size + image + trait overrides, like KubeSpawner's ``profile_list``;
- the image build manifest (``images/manifest.json``): every image the build published, appended to the
  images on offer.

The manifest's schema and its checks live in ``manifest.py`` (shared with the build tasks that write it).
Only published builds are offered (a local qcow2 cannot boot in the cloud), by their cloud image id; of the
builds of one OS, only the newest (last listed) is offered. ``image_manifest_cloud`` names the cloud to
read; it may be left unset when every build was published to one cloud only.

Packer's own ``manifest`` post-processor output (``{"builds": [{"name", "artifact_id", "custom_data"}]}``)
is read as well: ``custom_data`` may carry ``display_name``, ``image_name`` and ``cloud``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import manifest
from .manifest import ManifestError, check_entries, is_packer_manifest, parse_manifest

MAX_DISPLAY_LENGTH = 200
MAX_CLOUD_NAME_LENGTH = 255
_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class CatalogError(ValueError):
    """The administrator's configuration of sizes, images, profiles or manifest is wrong."""


@dataclass(frozen=True)
class Choice:
    """One entry of a list on offer: what the form shows, and what the cloud calls it (name or id)."""

    display_name: str
    cloud_name: str
    default: bool = False
    #: the image's accounts as its manifest entry records them (a hub user is never mapped onto one)
    accounts: frozenset[str] = field(default=frozenset(), compare=False)


@dataclass(frozen=True)
class Profile:
    """A named preset: size + image, and overrides of a few spawner settings."""

    slug: str
    display_name: str
    size: str
    image: str
    description: str = ""
    default: bool = False
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Catalog:
    sizes: tuple[Choice, ...] = ()
    images: tuple[Choice, ...] = ()
    profiles: tuple[Profile, ...] = ()

    def default_size(self) -> Choice | None:
        return _default(self.sizes)

    def default_image(self) -> Choice | None:
        return _default(self.images)

    def default_profile(self) -> Profile | None:
        return _default(self.profiles)

    def profile(self, slug: str) -> Profile | None:
        return next((p for p in self.profiles if p.slug == slug), None)

    def size(self, cloud_name: str) -> Choice | None:
        return next((c for c in self.sizes if c.cloud_name == cloud_name), None)

    def image(self, cloud_name: str) -> Choice | None:
        return next((c for c in self.images if c.cloud_name == cloud_name), None)

    def image_accounts(self, cloud_name: str) -> frozenset[str]:
        """The accounts the manifest records for the image ``cloud_name`` (none for a configured image)."""
        choice = self.image(cloud_name)
        return choice.accounts if choice is not None else frozenset()


def _default(items):
    return next((i for i in items if i.default), items[0] if items else None)


def _check_text(value: object, what: str, max_length: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(f"{what} must be a non-empty string, not {value!r}")
    if len(value) > max_length:
        raise CatalogError(f"{what} is longer than {max_length} characters: {value[:40]!r}...")
    return value


def normalize_choices(value: Iterable[Any], what: str) -> tuple[Choice, ...]:
    """``[("Display", "cloud-name"), ...]`` (tuples, lists or plain names) -> ``(Choice, ...)``.

    Raises ``CatalogError`` naming the bad entry.
    """
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise CatalogError(f"{what} must be a list of (display name, cloud name) pairs, not {value!r}")
    choices = []
    for index, item in enumerate(value):
        if isinstance(item, str):
            item = (item, item)
        if isinstance(item, Choice):
            choices.append(item)
            continue
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise CatalogError(
                f"{what}[{index}] must be a (display name, cloud name) pair, e.g. ('1 vCPU, 2 GB', 'm1.small');"
                f" got {item!r}"
            )
        display, cloud = item
        choices.append(
            Choice(
                _check_text(display, f"{what}[{index}] display name", MAX_DISPLAY_LENGTH),
                _check_text(cloud, f"{what}[{index}] cloud name", MAX_CLOUD_NAME_LENGTH),
            )
        )
    return tuple(choices)


def normalize_profiles(value: Iterable[Any], allowed_overrides: Iterable[str]) -> tuple[Profile, ...]:
    """Check ``profiles`` entries (dicts) and return them as ``Profile`` objects.

    Keys: ``display_name`` (required), ``slug`` (default: derived from display_name), ``description``,
    ``size`` and ``image`` (cloud names, required), ``default`` (bool), ``overrides`` (dict of settings
    among ``allowed_overrides``).
    """
    allowed = frozenset(allowed_overrides)
    known_keys = {"display_name", "slug", "description", "size", "image", "default", "overrides"}
    profiles: list[Profile] = []
    for index, item in enumerate(value):
        where = f"profiles[{index}]"
        if not isinstance(item, Mapping):
            raise CatalogError(f"{where} must be a dict with display_name, size and image; got {item!r}")
        unknown = set(item) - known_keys
        if unknown:
            raise CatalogError(f"{where} has unknown key(s) {sorted(unknown)}; allowed: {sorted(known_keys)}")
        display = _check_text(item.get("display_name"), f"{where}.display_name", MAX_DISPLAY_LENGTH)
        slug = item.get("slug") or _slugify(display)
        if not isinstance(slug, str) or not _SLUG_RE.match(slug):
            raise CatalogError(f"{where}.slug {slug!r} must match {_SLUG_RE.pattern}")
        overrides = item.get("overrides") or {}
        if not isinstance(overrides, Mapping):
            raise CatalogError(f"{where}.overrides must be a dict of settings, not {overrides!r}")
        bad = set(overrides) - allowed
        if bad:
            raise CatalogError(f"{where}.overrides cannot set {sorted(bad)}; allowed: {sorted(allowed)}")
        description = item.get("description", "")
        if not isinstance(description, str) or len(description) > 2000:
            raise CatalogError(f"{where}.description must be a string of at most 2000 characters")
        default = item.get("default", False)
        if not isinstance(default, bool):
            raise CatalogError(f"{where}.default must be true or false, not {default!r}")
        profiles.append(
            Profile(
                slug=slug,
                display_name=display,
                size=_check_text(item.get("size"), f"{where}.size", MAX_CLOUD_NAME_LENGTH),
                image=_check_text(item.get("image"), f"{where}.image", MAX_CLOUD_NAME_LENGTH),
                description=description,
                default=default,
                overrides=dict(overrides),
            )
        )
    slugs = [p.slug for p in profiles]
    duplicates = sorted({s for s in slugs if slugs.count(s) > 1})
    if duplicates:
        raise CatalogError(f"profiles: duplicate slug(s) {duplicates}; give each profile its own 'slug'")
    if sum(p.default for p in profiles) > 1:
        raise CatalogError("profiles: at most one profile may have default: true")
    return tuple(profiles)


def _slugify(display_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", display_name.lower()).strip("-")[:63].strip("-")
    return slug or "profile"


def load_manifest(path: str | Path, cloud: str | None = None) -> tuple[Choice, ...]:
    """Images listed by a build manifest (see ``manifest.py``), filtered to ``cloud`` if given.

    Raises ``CatalogError`` if the file cannot be read, has an unknown schema or a malformed entry.
    """
    try:
        data = manifest.load_manifest(path)
    except ManifestError as e:
        raise CatalogError(str(e)) from e
    return manifest_choices(data, cloud=cloud, source=str(path))


def _entries(data: Any, source: str) -> tuple[list, bool]:
    """The entries of a parsed manifest and whether it is Packer's; their shape checked by ``manifest.py``."""
    try:
        if is_packer_manifest(data):
            return parse_manifest(data, source)["builds"], True
        if not isinstance(data, Mapping) or "images" not in data:
            raise CatalogError(f"{source}: expected a JSON object with an 'images' list (or Packer's 'builds')")
        return check_entries(data["images"], source), False
    except ManifestError as e:
        raise CatalogError(str(e)) from e


def manifest_choices(data: Any, cloud: str | None = None, source: str = "manifest") -> tuple[Choice, ...]:
    """The images of a parsed manifest (ours or Packer's): the newest published build of each OS."""
    entries, packer = _entries(data, source)
    newest: dict[str, Choice] = {}  # OS (or name) -> choice; dicts keep first-insertion order
    for index, entry in enumerate(entries):
        if packer:
            custom = entry.get("custom_data") or {}
            name = custom.get("image_name") or entry.get("name")
            image_id = entry.get("artifact_id")
            display = custom.get("display_name") or name
            if cloud is not None and custom.get("cloud") not in (None, cloud):
                continue
            default = str(custom.get("default", "")).lower() == "true"
            key = f"packer-{index}"
        else:
            name = entry["name"]
            published = entry["published"]  # cloud -> record, each checked by manifest.check_entry
            if cloud is not None:
                where = published.get(cloud)
            elif len(published) > 1:
                raise CatalogError(
                    f"{source}: image {name!r} is published to several clouds ({', '.join(sorted(published))}):"
                    " set LibcloudSpawner.image_manifest_cloud to the one this hub uses"
                )
            else:
                where = next(iter(published.values()), None)
            if not where:
                continue  # built here but not published to this cloud: nothing a VM could boot from
            image_id = where["image_id"]
            name = where.get("image_name") or name
            display = entry.get("display_name") or name
            default = entry.get("default") is True
            key = str(entry.get("os") or name)
        cloud_name = image_id if isinstance(image_id, str) and image_id else name
        choice = Choice(
            _check_text(display, f"{source}: images[{index}] display_name", MAX_DISPLAY_LENGTH),
            _check_text(cloud_name, f"{source}: images[{index}] name", MAX_CLOUD_NAME_LENGTH),
            default=default,
            accounts=frozenset() if packer else manifest.account_names(entry),
        )
        newest.pop(key, None)
        newest[key] = choice
    return tuple(newest.values())


def build_catalog(
    sizes: Iterable[Any],
    images: Iterable[Any],
    profiles: Iterable[Profile] = (),
    manifest_images: Iterable[Choice] = (),
) -> Catalog:
    """Merge the configured lists and the manifest (configured entries first; duplicates dropped, a configured
    image that the manifest lists too keeps the accounts the manifest records for it)."""
    manifest_images = tuple(manifest_images)
    accounts = {c.cloud_name: c.accounts for c in manifest_images}
    merged: list[Choice] = [
        replace(c, accounts=c.accounts | accounts.get(c.cloud_name, frozenset()))
        for c in normalize_choices(images, "userserver_images")
    ]
    seen = {c.cloud_name for c in merged}
    for choice in manifest_images:
        if choice.cloud_name not in seen:
            merged.append(choice)
            seen.add(choice.cloud_name)
    return Catalog(
        sizes=normalize_choices(sizes, "userserver_sizes"),
        images=tuple(merged),
        profiles=tuple(profiles),
    )


_cached: dict[str, Catalog] = {}


def cached_catalog(
    sizes: Iterable[Any],
    images: Iterable[Any],
    profiles: Iterable[Any],
    allowed_overrides: Iterable[str],
    *,
    manifest_path: str | None = None,
    manifest_cloud: str | None = None,
) -> Catalog:
    """:func:`build_catalog` from the configuration, built again only when the configuration or the
    manifest file (its modification time) changes; shared by every spawner of the process."""
    version: object = None
    if manifest_path:
        try:
            version = os.stat(manifest_path).st_mtime_ns
        except OSError:
            version = "missing"  # load_manifest says so below
    key = json.dumps(
        [sizes, images, profiles, list(allowed_overrides), manifest_path, version, manifest_cloud], default=repr
    )
    catalog = _cached.get(key)
    if catalog is None:
        found = load_manifest(manifest_path, manifest_cloud) if manifest_path else ()
        catalog = build_catalog(sizes, images, normalize_profiles(profiles, allowed_overrides), found)
        if len(_cached) >= 16:
            _cached.clear()
        _cached[key] = catalog
    return catalog
