"""The cloud side of the image pipeline: the openstack builder's pre-flight (names resolved to ids) and
publishing a build to Glance under a name that means one image."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from invoke import Exit

from .common import os_vars, sha256
from .manifest import default_image, find_entry, load_manifest, record_published

#: openstacksdk's create_image records the file's sha256 under this property
SDK_SHA256_KEY = "owner_specified.openstack.sha256"


def connect(cloud: str):
    """An authenticated openstacksdk connection to the clouds.yaml entry ``cloud``."""
    try:
        import openstack
        import openstack.exceptions
    except ImportError:
        raise Exit("openstacksdk is missing: install it with `pip install openstacksdk` (./bootstrap does)") from None
    try:
        conn = openstack.connect(cloud=cloud)
        conn.authorize()
    except openstack.exceptions.ConfigException as e:
        raise Exit(f"no usable clouds.yaml entry {cloud!r}: {e}") from None
    except openstack.exceptions.SDKException as e:
        raise Exit(f"cannot authenticate to cloud {cloud!r}: {e}") from None
    return conn


# --- the openstack builder's pre-flight ---------------------------------------------------------------------


class AmbiguousName(LookupError):
    """A name that several resources of one kind carry."""


class OpenstackBuild(NamedTuple):
    """What Packer's openstack builder is given: ids only (its ``networks`` accepts nothing else)."""

    source_image: str
    flavor: str
    network: str | None
    #: every image name the cloud already shows: the baked image's name must be none of them
    image_names: frozenset[str] = frozenset()


def find_one(kind: str, wanted: str, items: Iterable[Any]) -> Any | None:
    """The one item of ``items`` whose id is ``wanted``, else the one named ``wanted``; None if none is.

    An id wins over a name (as the openstack CLI decides); a name carried by several items raises
    ``AmbiguousName`` naming their ids."""
    items = list(items)
    for item in items:
        if item.id == wanted:
            return item
    named = [item for item in items if item.name == wanted]
    if len(named) > 1:
        ids = ", ".join(sorted(item.id for item in named))
        raise AmbiguousName(f"several {kind}s are named {wanted!r} ({ids}): pass one by its id")
    return named[0] if named else None


def _names(items: Iterable[Any]) -> str:
    return ", ".join(sorted({item.name or item.id for item in items})) or "none"


def check_openstack_build(conn, cloud: str, source_image: str, flavor: str, network: str) -> OpenstackBuild:
    """The ids of ``source_image``, ``flavor`` and ``network`` (each a name or an id) through ``conn``, after
    checking that the image is active and fits the flavor. Every problem is named in one Exit."""
    problems: list[str] = []

    def lookup(kind: str, wanted: str, items: list, missing: str) -> Any | None:
        try:
            item = find_one(kind, wanted, items)
        except AmbiguousName as e:
            problems.append(str(e))
            return None
        if item is None:
            problems.append(missing)
        return item

    images = list(conn.image.images())
    image = lookup(
        "image", source_image, images,
        f"no image {source_image!r} in Glance (this cloud has: {_names(images)}): upload a base first, e.g."
        f" `openstack --os-cloud {cloud} image create --disk-format qcow2"
        f" --file images/output/base/debian-12.qcow2 {source_image}`",
    )  # fmt: skip
    if image is not None and image.status != "active":
        problems.append(f"image {source_image!r} is {image.status}, not active")
    flavors = list(conn.compute.flavors())
    found = lookup("flavor", flavor, flavors, f"no flavor {flavor!r} (this cloud has: {_names(flavors)})")
    if found is not None and image is not None and (image.min_disk or 0) > found.disk:
        problems.append(f"flavor {flavor!r} has a {found.disk} GB disk; the image needs {image.min_disk} GB")
    net = None
    if network:
        networks = list(conn.network.networks())
        net = lookup("network", network, networks, f"no network {network!r} (this cloud has: {_names(networks)})")
    if problems:
        raise Exit(f"build-image --builder openstack, cloud {cloud!r}:\n  " + "\n  ".join(problems))
    return OpenstackBuild(image.id, found.id, net.id if net else None, frozenset(i.name for i in images if i.name))


def openstack_preflight(cloud: str, source_image: str, flavor: str, network: str) -> OpenstackBuild:
    """Before Packer boots anything: the cloud answers, and the source image, flavor and network exist, each
    resolved to its id (Packer would otherwise fail minutes later, or, for a network, leave Nova to pick one)."""
    return check_openstack_build(connect(cloud), cloud, source_image, flavor, network)


def set_min_ram(cloud: str, image_id: str, min_ram_mb: int) -> None:
    """The openstack builder sets min_disk but not min_ram: set it through the image API."""
    if image_id == "unknown":
        return
    connect(cloud).image.update_image(image_id, min_ram=min_ram_mb)


# --- publishing ----------------------------------------------------------------------------------------------


class GlanceImage(NamedTuple):
    id: str
    name: str
    status: str
    sha256: str


def glance_target(
    wanted: str, explicit: bool, sha256: str, visible: list[GlanceImage], *, force: bool = False
) -> tuple[str, str | None]:
    """The Glance name to publish a build under, and the id of an image to reuse instead of uploading.

    Glance allows two images of one name, but a name that means two images cannot be configured (the
    spawner and the openstack CLI refuse to guess). So: this very build (same sha256) already active
    under its name or a suffixed one is reused, unless ``force``; a default name taken by another build
    becomes ``NAME-2``, ``NAME-3`` ... (as local builds do); an explicit ``--name`` that is taken is refused.
    """
    family = [i for i in visible if i.name == wanted or re.fullmatch(re.escape(wanted) + r"-\d+", i.name)]
    if not force:
        for image in family:
            if image.sha256 == sha256 and image.status == "active":
                return image.name, image.id
    taken = {i.name for i in visible}
    if wanted not in taken:
        return wanted, None
    if explicit:
        ids = ", ".join(sorted(i.id for i in visible if i.name == wanted))
        raise Exit(
            f"publish-image: the cloud already has an image named {wanted!r} ({ids}) that is not this build:"
            " choose another --name, or delete that image first"
        )
    n = 2
    while f"{wanted}-{n}" in taken:
        n += 1
    return f"{wanted}-{n}", None


def image_properties(entry: dict) -> dict[str, str]:
    """The Glance properties of a build (as the openstack builder sets them: images/packer/sources.pkr.hcl)."""
    vars_ = os_vars(entry["os"])
    return {
        "os_distro": vars_["os_distro"],
        "os_version": vars_["os_version"],
        "os_type": "linux",
        "hw_qemu_guest_agent": "yes",
        "lcs_git_commit": entry["git_commit"],
        "lcs_build_date": entry["date"],
        **{f"lcs_{k}_version": v for k, v in entry["versions"].items()},
    }


def publish(c, cloud: str, image: str = "", name: str = "", visibility: str = "private", timeout: int = 1800,
            force: bool = False) -> str:  # fmt: skip
    """Upload a built qcow2 to Glance (or find it there already); record its id in the manifest."""
    path = Path(image).resolve() if image else default_image()
    data = load_manifest()
    entry = find_entry(data, path)
    if entry is None:
        raise Exit(f"{path} is not in images/manifest.json: build it with `invoke build-image` first")
    if entry["sha256"] != sha256(path):
        raise Exit(f"{path} does not match its manifest checksum: rebuild it")
    conn = connect(cloud)
    already = entry.get("published", {}).get(cloud)
    if already and not force:
        existing = conn.image.find_image(already["image_id"], ignore_missing=True)
        if existing is not None and existing.status == "active":
            print(f"publish-image: already in {cloud} as {existing.id} ({existing.name}); --force uploads again")
            return existing.id
    visible = [
        GlanceImage(i.id, i.name or "", i.status, (i.properties or {}).get(SDK_SHA256_KEY, ""))
        for i in conn.image.images()
    ]
    glance_name, reuse = glance_target(name or entry["name"], bool(name), entry["sha256"], visible, force=force)
    if reuse is not None:
        print(f"publish-image: this build is already in {cloud} as {reuse} ({glance_name}); manifest updated")
        record_published(data, entry, cloud, reuse, glance_name)
        return reuse
    if glance_name != entry["name"] and not name:
        print(f"publish-image: {entry['name']!r} is taken in {cloud} by another build; publishing as {glance_name!r}")
    properties = image_properties(entry)
    print(f"publish-image: uploading {path.name} to {cloud} as {glance_name}", flush=True)
    import openstack.exceptions

    try:
        img = conn.image.create_image(
            name=glance_name,
            filename=str(path),
            disk_format="qcow2",
            container_format="bare",
            visibility=visibility,
            min_disk=entry["min_disk_gb"],
            min_ram=entry["min_ram_mb"],
            allow_duplicates=True,  # glance_target made the name unique among the images visible to us
            validate_checksum=True,  # the sdk hashes the file: md5 checked by Glance, sha256 kept in SDK_SHA256_KEY
            wait=True,
            timeout=int(timeout),
            **properties,
        )
    except openstack.exceptions.SDKException as e:
        raise Exit(f"publish-image: upload to {cloud} failed: {e}") from None
    record_published(data, entry, cloud, img.id, glance_name)
    print(f"publish-image: {glance_name} is {img.id} in {cloud} (status {img.status}); manifest updated")
    return img.id
