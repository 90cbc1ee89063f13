"""`invoke build-image --builder openstack` against the dev cloud: names resolved to ids, then one real bake.

Packer's openstack builder takes a network only by its UUID (a name fails with "Bad networks format: network uuid
is not in proper format"). The pre-flight resolves a name or an id to the id. A name two items carry is refused
naming both ids: for images against Glance in test_publish.py; for networks in tests/unit (the dev cloud's
flat-only Neutron has room for one network).

Then the documented command (docs/images.md, "Inside a cloud") runs as an administrator runs it, from the
repository root: Packer boots the pre-staged base (the images tier's `images/output/prebaked/*.qcow2`, in Glance
as `lcs-debian-12-prebaked`) in the dev cloud, provisions it and snapshots it into Glance. The new image's
properties, `min_disk`, `min_ram` and manifest entry are checked, then the hub offers it by id and a user's server
booted from it answers through the proxy. The baked image and its manifest entry are removed at the end; the
source stays in Glance for the next run (uploaded again only when the file changed).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from devtools.images.build import MIN_DISK_GB, MIN_RAM_MB
from devtools.images.common import sha256
from devtools.images.manifest import load_manifest, save_manifest
from devtools.images.publish import SDK_SHA256_KEY, image_properties, openstack_preflight
from testkit.e2e import GUEST_POLL_S, REPO, TAG_HUB_ID, Spawn, form_options, nova_view, servers_of, wait_no_server
from testkit.localhost import stop_process
from testkit.wait import wait_until
from tests.e2e.conftest import START_TIMEOUT_S

pytestmark = pytest.mark.e2e

CLOUD = "devcloud"
FLAVOR = "j1.small"
#: the command docs/images.md documents, run as is
BAKE_COMMAND = (
    "invoke build-image --os debian-12 --builder openstack --cloud devcloud --source-image lcs-debian-12-prebaked"
    " --flavor j1.small --network flatnet"
)
SOURCE_IMAGE = "lcs-debian-12-prebaked"
PREBAKED = REPO / "images" / "output" / "prebaked"
FIX_PREBAKED = (
    "run `invoke build-image --os debian-12 --prebake yes` (the images tier does: its chroot pre-stage writes it)"
)
#: Packer waits up to 20 min for SSH; the bake takes 4-5 min on emulated guests
BAKE_TIMEOUT_S = 1800
USER = "baker"


@pytest.fixture
def flatnet(nova, facts):
    net = nova.network.find_network(facts["network"], ignore_missing=True)
    assert net is not None, f"the dev cloud has no network {facts['network']!r}"
    return net


@pytest.mark.parametrize("by", ["name", "id"])
def test_the_flat_network_by_name_or_by_id_gives_its_id(facts, image, flatnet, by):
    wanted = facts["network"] if by == "name" else flatnet.id
    build = openstack_preflight(CLOUD, image["image_name"], FLAVOR, wanted)
    assert build.network == flatnet.id


def test_the_source_image_and_the_flavor_are_given_by_id(nova, image):
    build = openstack_preflight(CLOUD, image["image_name"], FLAVOR, "")
    assert build.source_image == image["image_id"]
    assert build.flavor == nova.compute.find_flavor(FLAVOR, ignore_missing=False).id
    assert build.network is None


# ------------------------------------------------------------------------------------------------ the bake
def test_the_documented_command_is_the_one_ci_runs():
    text = (REPO / "docs" / "images.md").read_text()
    chapter = text.split("### Inside a cloud", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", chapter, re.S)
    assert block, "docs/images.md, 'Inside a cloud', has no sh block"
    assert " ".join(block[1].replace("\\\n", " ").split()) == BAKE_COMMAND


def glance_file_image(conn, path: Path, name: str) -> Any:
    """The one Glance image called ``name`` holding the file ``path``: reused when it is active with the file's
    sha256 (the property openstacksdk records at upload), else every image of that name is deleted and the file
    uploaded. Never two images of that name."""
    digest = sha256(path)
    same = [i for i in conn.image.images() if i.name == name]
    if len(same) == 1 and same[0].status == "active" and (same[0].properties or {}).get(SDK_SHA256_KEY) == digest:
        return same[0]
    for old in same:
        conn.image.delete_image(old, ignore_missing=True)
    return conn.image.create_image(
        name=name, filename=str(path), disk_format="qcow2", container_format="bare", visibility="private",
        min_disk=MIN_DISK_GB, allow_duplicates=True, validate_checksum=True, wait=True, timeout=900,
    )  # fmt: skip


@pytest.fixture(scope="module")
def source(nova):
    """The pre-staged base the images tier left, in Glance as SOURCE_IMAGE."""
    files = sorted(PREBAKED.glob("debian-12-*.qcow2"), key=lambda p: p.stat().st_mtime)
    if not files:
        pytest.fail(f"no pre-staged base in {PREBAKED}: {FIX_PREBAKED}", pytrace=False)
    image = glance_file_image(nova, files[-1], SOURCE_IMAGE)
    assert [i.id for i in nova.image.images() if i.name == SOURCE_IMAGE] == [image.id]
    return image


class Bake(NamedTuple):
    name: str
    image_id: str
    entry: dict
    seconds: float
    servers_before: set[str]


def build_instances(nova, name: str, servers_before: set[str]) -> list:
    """Servers made since ``servers_before`` that are Packer's (named after the image, or Packer's own default)
    and not a hub's (no hub id tag)."""
    return [
        s for s in nova.compute.servers()
        if s.id not in servers_before and TAG_HUB_ID not in (s.metadata or {})
        and (s.name == name or s.name.startswith("packer"))
    ]  # fmt: skip


def run_bake(log: Path) -> tuple[int | None, str, float]:
    """BAKE_COMMAND from the repository root with this environment's `invoke`; exit code (None: timed out),
    output, seconds. On timeout, invoke is interrupted first (it passes SIGINT on: Packer then deletes its
    instance and key pair)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            shlex.split(BAKE_COMMAND), cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
        try:
            code: int | None = proc.wait(BAKE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(300)
            finally:
                stop_process(proc, 30)
            code = None
    return code, log.read_text(errors="replace"), time.monotonic() - started


def forget_bake(nova, name: str, images_before: set[str]) -> None:
    """The baked image out of Glance and out of the manifest (the tier's other checks offer the qemu build)."""
    for image in list(nova.image.images()):
        if image.name == name and image.id not in images_before:
            nova.image.delete_image(image, ignore_missing=True)
    data = load_manifest()
    kept = [e for e in data["images"] if e["name"] != name]
    if len(kept) != len(data["images"]):
        data["images"] = kept
        save_manifest(data)


@pytest.fixture(scope="module")
def bake(nova, source, artifacts):
    """One run of BAKE_COMMAND; afterwards the baked image is deleted from Glance and the manifest."""
    images_before = {i.id for i in nova.image.images()}
    servers_before = {s.id for s in nova.compute.servers()}
    names_before = {e["name"] for e in load_manifest()["images"]}
    name = ""
    try:
        code, output, seconds = run_bake(artifacts / "openstack-bake.log")
        m = re.search(r"^build-image: (\S+) with \S+ \(openstack", output, re.M)
        name = m[1] if m else ""
        if code != 0:
            tail = "\n".join(output.splitlines()[-40:])
            pytest.fail(f"`{BAKE_COMMAND}` {'timed out' if code is None else f'exited {code}'}:\n{tail}")
        entries = [e for e in load_manifest()["images"] if e["name"] not in names_before]
        assert [e["name"] for e in entries] == [name], f"manifest entries added by the bake: {entries}"
        image_id = entries[0]["published"][CLOUD]["image_id"]
        yield Bake(name, image_id, entries[0], seconds, servers_before)
    finally:
        if name:
            for server in build_instances(nova, name, servers_before):
                nova.compute.delete_server(server, ignore_missing=True)
            forget_bake(nova, name, images_before)


def test_the_bake_registers_one_active_image_with_the_build_properties(nova, bake, hub):
    hub.timings["openstack_bake_s"] = round(bake.seconds, 1)
    assert [i.id for i in nova.image.images() if i.name == bake.name] == [bake.image_id]
    record = nova.image.get(f"/images/{bake.image_id}").json()  # every property, as Glance holds it
    assert record["status"] == "active"
    assert (record["min_disk"], record["min_ram"]) == (MIN_DISK_GB, MIN_RAM_MB)
    expected = image_properties(bake.entry)
    assert {k: record.get(k) for k in expected} == expected
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert record["lcs_git_commit"] == head.strip()
    assert {f"lcs_{k}_version" for k in ("python", "jupyterhub", "jupyterlab", "numpy", "matplotlib")} <= set(record)


def test_the_manifest_records_the_openstack_build(bake):
    assert bake.entry["builder"] == "openstack"
    assert bake.entry["published"][CLOUD]["image_name"] == bake.name
    assert bake.entry["path"] is None and bake.entry["sha256"] is None  # nothing local: the image is in Glance
    assert (bake.entry["min_disk_gb"], bake.entry["min_ram_mb"]) == (MIN_DISK_GB, MIN_RAM_MB)


def test_the_build_instance_is_gone(nova, bake):
    try:
        wait_until(
            lambda: not build_instances(nova, bake.name, bake.servers_before),
            timeout_s=120, interval_s=GUEST_POLL_S, what="Nova to list no build instance",
        )  # fmt: skip
    except TimeoutError as e:
        raise AssertionError(f"{e}\n{nova_view(nova, build_instances(nova, bake.name, bake.servers_before))}") from None


def test_the_baked_image_serves_a_user_through_the_hub(hub, nova, bake):
    assert bake.image_id in form_options(hub, USER)["image"], "the hub does not offer the baked image by id"
    spawn = Spawn(hub, USER, options={"size": FLAVOR, "image": bake.image_id}).start()
    try:
        spawn.wait(START_TIMEOUT_S)
        hub.timings["openstack_baked_spawn_to_ready_s"] = round(spawn.seconds, 1)
        r = hub.through_proxy(USER, path="api/status")
        assert r.status_code == 200, (r.status_code, r.text[:200])
        (vm,) = servers_of(nova, hub.hub_id, USER)
        assert vm.image["id"] == bake.image_id
    finally:
        hub.api("DELETE", hub.server_url(USER))
        hub.wait_gone(USER, timeout_s=300)
    wait_no_server(nova, hub.hub_id, USER, timeout_s=180)
