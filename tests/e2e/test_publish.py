"""`invoke publish-image` against the real Glance: one build is one image, and a name is never shared.

CI failed once because one commit was built twice on one day (a local run, then CI) and both builds were
published as `debian-12-jupyter-DATE-COMMIT`; every lookup of that name then raised "More than one Image exists".
Small qcow2 files stand in for builds here (the upload path is the same; a real build is published by the tier's
set-up). Everything this file creates in Glance is deleted at the end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import uuid
from pathlib import Path

import pytest
from invoke import Context, Exit

import devtools.images.manifest as image_manifest
from devtools.images.common import sha256
from devtools.images.manifest import load_manifest, manifest_entry, save_manifest
from devtools.images.publish import openstack_preflight
from devtools.images.tasks import publish_image
from libcloudspawner.cloud import CloudAmbiguous, CloudClient, make_driver_factory
from libcloudspawner.config import from_libcloudparams
from libcloudspawner.settings import CloudSettings
from tests.e2e.conftest import doc_libcloudparams

CLOUD = "devcloud"
VERSIONS = {"python": "3.11.2", "jupyterhub": "5.4.0", "jupyterlab": "4.4.0", "numpy": "2.3.0", "matplotlib": "3.10.0"}


@pytest.fixture
def glance(nova):
    """The images this test creates (by name prefix), deleted afterwards whatever happened."""
    prefix = f"lcs-e2e-publish-{uuid.uuid4().hex[:8]}"
    yield prefix
    for image in list(nova.image.images()):
        if (image.name or "").startswith(prefix):
            nova.image.delete_image(image, ignore_missing=True)


@pytest.fixture
def manifest(tmp_path, monkeypatch):
    """A manifest of this test's own (the repository's stays untouched)."""
    monkeypatch.setattr(image_manifest, "MANIFEST_PATH", tmp_path / "manifest.json")
    save_manifest({"schema": image_manifest.SCHEMA, "images": []})
    return tmp_path


def build(directory: Path, name: str, megabytes: int) -> Path:
    """A small qcow2 recorded in the manifest as a Debian 12 build called ``name``."""
    path = directory / f"{name}-{megabytes}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), f"{megabytes}M"], check=True)
    entry = manifest_entry(
        name=name, os_name="debian-12", versions=VERSIONS, date=dt.datetime.now(dt.timezone.utc),
        git_commit="0" * 40, builder="qemu", image=None, sizes={}, sha256=sha256(path), min_disk_gb=1,
        min_ram_mb=64,
    )  # fmt: skip
    entry["path"] = str(path)
    data = load_manifest()
    data["images"].append(entry)
    save_manifest(data)
    return path


def named(nova, name: str) -> list:
    return [i for i in nova.image.images() if i.name == name]


def test_the_same_build_is_one_image_and_another_build_gets_a_free_name(nova, glance, manifest, capsys):
    first = build(manifest, glance, 64)
    image_id = publish_image(Context(), CLOUD, image=str(first))
    assert [i.id for i in named(nova, glance)] == [image_id]

    # a clean clone publishing the same build: its manifest does not know the earlier upload, Glance does
    data = load_manifest()
    data["images"][0]["published"] = {}
    save_manifest(data)
    assert publish_image(Context(), CLOUD, image=str(first)) == image_id
    assert "this build is already in devcloud" in capsys.readouterr().out
    assert [i.id for i in named(nova, glance)] == [image_id]
    assert load_manifest()["images"][0]["published"][CLOUD]["image_id"] == image_id

    # another build under the same default name (same commit, same day): published beside it, never over it
    second = build(manifest, glance, 96)
    second_id = publish_image(Context(), CLOUD, image=str(second))
    assert second_id != image_id
    assert [i.id for i in named(nova, f"{glance}-2")] == [second_id]
    assert load_manifest()["images"][1]["published"][CLOUD]["image_name"] == f"{glance}-2"
    assert [i.id for i in named(nova, glance)] == [image_id]

    # an explicit --name that another build holds is refused, and nothing is uploaded
    third = build(manifest, f"{glance}-other", 32)
    with pytest.raises(Exit) as e:
        publish_image(Context(), CLOUD, image=str(third), name=glance)
    assert f"already has an image named {glance!r} ({image_id}) that is not this build" in str(e.value.message)
    assert len([i for i in nova.image.images() if (i.name or "").startswith(glance)]) == 2


def test_a_name_that_glance_holds_twice_is_refused_by_the_build_and_by_the_spawner(nova, glance, facts):
    twins = [
        nova.image.create_image(name=glance, data=f"twin {n}".encode(), disk_format="raw", container_format="bare",
                                allow_duplicates=True, wait=True)
        for n in (1, 2)
    ]  # fmt: skip
    ids = ", ".join(sorted(t.id for t in twins))

    with pytest.raises(Exit) as e:
        openstack_preflight(CLOUD, glance, "j1.small", "")
    assert f"several images are named {glance!r} ({ids}): pass one by its id" in str(e.value.message)

    # the spawner, with the real libcloud driver and the documentation's libcloudparams: no guessing
    arguments = from_libcloudparams(doc_libcloudparams(facts), "openstack")
    client = CloudClient(make_driver_factory(arguments), CloudSettings(api_max_workers=1))

    async def resolve():
        try:
            with pytest.raises(CloudAmbiguous) as info:
                await client.image(glance)
            assert str(info.value) == f"the cloud has 2 images named {glance!r} ({ids}): configure one by its id"
            assert (await client.image(twins[0].id)).id == twins[0].id
        finally:
            client.close()

    asyncio.run(resolve())
