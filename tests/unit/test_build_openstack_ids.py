"""`invoke build-image --builder openstack` hands Packer ids: names are resolved through the cloud first.

Packer's openstack builder takes a network only by its UUID ("Bad networks format: network uuid is not in
proper format" otherwise). The sdk connection is a small fake here (its three listings); the real cloud's
answers are checked in tests/e2e/test_build_openstack.py.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import pytest
from invoke import Exit

from devtools.images.build import BuildPlan, BuildRequest, packer_vars
from devtools.images.common import os_vars
from devtools.images.manifest import manifest_entry
from devtools.images.publish import AmbiguousName, OpenstackBuild, check_openstack_build, find_one, image_properties

NET_ID = "5b3c2f0e-0000-4000-8000-000000000001"
TWIN_A, TWIN_B = "5b3c2f0e-0000-4000-8000-00000000000a", "5b3c2f0e-0000-4000-8000-00000000000b"
IMAGE_ID = "7e2221d5-0000-4000-8000-000000000001"


def item(id_: str, name: str, **more) -> SimpleNamespace:
    return SimpleNamespace(id=id_, name=name, **more)


NETWORKS = [item(NET_ID, "flatnet"), item(TWIN_A, "twin"), item(TWIN_B, "twin"), item("odd-id", NET_ID[:8])]


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        ("flatnet", NET_ID),  # by name
        (NET_ID, NET_ID),  # by id
        (TWIN_A, TWIN_A),  # an id is one resource even where its name is shared
        (NET_ID[:8], "odd-id"),  # a name is not an id prefix
        ("nowhere", None),  # missing
    ],
    ids=["name", "id", "id-of-a-twin", "name-not-prefix", "missing"],
)
def test_a_name_or_an_id_gives_the_one_id(wanted, expected):
    found = find_one("network", wanted, NETWORKS)
    assert (found.id if found else None) == expected


def test_a_shared_name_is_ambiguous_naming_both_ids():
    with pytest.raises(AmbiguousName) as info:
        find_one("network", "twin", NETWORKS)
    assert str(info.value) == f"several networks are named 'twin' ({TWIN_A}, {TWIN_B}): pass one by its id"


def fake_cloud(images=(), flavors=(), networks=()) -> SimpleNamespace:
    """The three listings of an openstacksdk connection that the pre-flight reads."""
    return SimpleNamespace(
        image=SimpleNamespace(images=lambda: iter(images)),
        compute=SimpleNamespace(flavors=lambda: iter(flavors)),
        network=SimpleNamespace(networks=lambda: iter(networks)),
    )


IMAGES = [item(IMAGE_ID, "debian-12-base", status="active", min_disk=8)]
FLAVORS = [item("f-small", "m1.small", disk=10), item("f-tiny", "m1.tiny", disk=1)]
CLOUD = fake_cloud(IMAGES, FLAVORS, NETWORKS)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("debian-12-base", "m1.small", "flatnet"), OpenstackBuild(IMAGE_ID, "f-small", NET_ID)),
        ((IMAGE_ID, "f-small", NET_ID), OpenstackBuild(IMAGE_ID, "f-small", NET_ID)),
        (("debian-12-base", "m1.small", ""), OpenstackBuild(IMAGE_ID, "f-small", None)),  # no network: Nova's pick
    ],
    ids=["names", "ids", "no-network"],
)
def test_the_build_gets_ids(args, expected):
    assert check_openstack_build(CLOUD, "devcloud", *args)[:3] == expected[:3]


def test_the_bake_is_named_after_no_image_the_cloud_shows(tmp_path, monkeypatch):
    """Glance keeps images of earlier bakes (and of earlier publishes) that this checkout's manifest does not
    know: the new image's name must not be one of them, or that name would stand for two images."""
    import devtools.images.build as build
    import devtools.images.manifest as manifest

    monkeypatch.setattr(manifest, "MANIFEST_PATH", tmp_path / "manifest.json")
    monkeypatch.setattr(build, "OUTPUT_DIR", tmp_path)
    date = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)
    base = "debian-12-jupyter-20260102-abcdef0"
    cloud = fake_cloud([*IMAGES, item("i2", base, status="active", min_disk=8), item("i3", f"{base}-2",
                       status="active", min_disk=8)], FLAVORS, NETWORKS)  # fmt: skip
    names = check_openstack_build(cloud, "devcloud", "debian-12-base", "m1.small", "").image_names
    assert names == {"debian-12-base", base, f"{base}-2"}
    assert build.unique_name("debian-12", date, "abcdef0" + "0" * 33, names) == f"{base}-3"
    assert build.unique_name("debian-12", date, "abcdef0" + "0" * 33) == base


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("debian-12-base", "m1.small", "twin"), f"several networks are named 'twin' ({TWIN_A}, {TWIN_B})"),
        (("debian-12-base", "m1.small", "nowhere"), "no network 'nowhere' (this cloud has: "),
        (("debian-12-base", "x9.huge", ""), "no flavor 'x9.huge' (this cloud has: m1.small, m1.tiny)"),
        (("lcs-no-base", "m1.small", ""), "no image 'lcs-no-base' in Glance (this cloud has: debian-12-base)"),
        (("debian-12-base", "m1.tiny", ""), "flavor 'm1.tiny' has a 1 GB disk; the image needs 8 GB"),
    ],
    ids=["ambiguous", "missing-network", "missing-flavor", "missing-image", "flavor-too-small"],
)
def test_what_cannot_be_resolved_is_named(args, problem):
    with pytest.raises(Exit) as info:
        check_openstack_build(CLOUD, "devcloud", *args)
    assert problem in str(info.value.message)


def test_a_missing_network_names_those_there_are():
    with pytest.raises(Exit) as info:
        check_openstack_build(CLOUD, "devcloud", "debian-12-base", "m1.small", "nowhere")
    assert f"this cloud has: {NET_ID[:8]}, flatnet, twin)" in str(info.value.message)


def test_every_problem_is_named_in_one_message():
    cloud = fake_cloud([*IMAGES, item("i2", "debian-12-base", status="active", min_disk=0)], FLAVORS, NETWORKS)
    with pytest.raises(Exit) as info:
        check_openstack_build(cloud, "devcloud", "debian-12-base", "x9.huge", "twin")
    lines = str(info.value.message).splitlines()
    assert lines[0] == "build-image --builder openstack, cloud 'devcloud':"
    assert [line.split(" ")[3] for line in lines[1:]] == ["images", "flavor", "networks"]


def test_an_image_that_is_not_active_is_refused():
    cloud = fake_cloud([item(IMAGE_ID, "debian-12-base", status="queued", min_disk=0)], FLAVORS)
    with pytest.raises(Exit, match="image 'debian-12-base' is queued, not active"):
        check_openstack_build(cloud, "devcloud", "debian-12-base", "m1.small", "")


def test_the_openstack_builder_writes_the_build_date_as_publish_image_does():
    date = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    plan = BuildPlan(vars=os_vars("debian-12"), base_url="", base_checksum="", date=date,
                     openstack=OpenstackBuild(IMAGE_ID, "j1.small", NET_ID))  # fmt: skip
    pvars = packer_vars(BuildRequest(builder="openstack"), plan, Path("/nonexistent"))
    versions = {"python": "3.11.2", "jupyterhub": "6.1.1", "jupyterlab": "4.6.6", "numpy": "2.4.6", "matplotlib": "3"}
    entry = manifest_entry(
        name="x", os_name="debian-12", versions=versions, date=date, git_commit="0" * 40, builder="openstack",
        image=None, sizes={}, sha256=None, min_disk_gb=8, min_ram_mb=1024,
    )  # fmt: skip
    assert pvars["build_date"] == image_properties(entry)["lcs_build_date"] == "2026-01-02T03:04:05Z"
