"""Block storage on the real dev cloud: a Cinder volume (Ceph RBD) attached to a running server by Nova.

The published image boots on the smallest flavor it fits; a 1 GiB volume is created, attached (QEMU opens
it through librbd: the libvirt domain shows an ``rbd`` network disk), seen ``in-use``, detached (the guest's
kernel acknowledges the unplug), and deleted. Whatever happens, the server and the volume are deleted.

With ``LCS_RECORD_DIR=testkit/osdouble/recordings/cinder`` the Cinder v3 and Nova volume-attachment exchanges
are written there (``testkit.recording``): the recordings the API double's volume subset is built from.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from testkit.e2e import GUEST_POLL_S, nova_view
from testkit.recording import Recorder
from testkit.wait import wait_until

VOLUME_GIB = 1
FLAVOR = "j1.tiny"
BOOT_TIMEOUT_S = 900
VOLUME_TIMEOUT_S = 180
#: a detach waits for the guest to release the disk (Nova retries the unplug for up to about 160 s)
DETACH_TIMEOUT_S = 300
#: the guest's kernel is up (it answers the unplug of a hot-plugged disk) once its console shows this
GUEST_UP = re.compile(r"cloud-init|login:", re.IGNORECASE)


@pytest.fixture
def record() -> Recorder:
    directory = os.environ.get("LCS_RECORD_DIR")
    return Recorder(Path(directory) if directory else None)


def volume_status(nova, volume_id: str) -> str | None:
    """The volume's status, or None once Cinder no longer knows it."""
    r = nova.block_storage.get(f"/volumes/{volume_id}", raise_exc=False)
    return None if r.status_code == 404 else r.json()["volume"]["status"]


def wait_volume(nova, volume_id: str, wanted: str | None, timeout_s: float) -> None:
    seen: list[str | None] = []

    def reached() -> bool:
        seen.append(volume_status(nova, volume_id))
        if seen[-1] in ("error", "error_deleting", "error_attaching", "error_detaching"):
            raise AssertionError(f"volume {volume_id} is {seen[-1]} (cinder-volume's log: /var/log/cinder/)")
        return seen[-1] == wanted

    try:
        wait_until(reached, timeout_s=timeout_s, interval_s=GUEST_POLL_S, what=f"volume {volume_id} {wanted}")
    except TimeoutError as e:
        raise AssertionError(f"{e}; statuses seen: {sorted(set(map(str, seen)))}") from None


def libvirt_disks(server_id: str) -> str:
    """The domain's disks as libvirt holds them (Nova names the domain by the server's UUID)."""
    out = subprocess.run(
        ["virsh", "-c", "qemu:///system", "dumpxml", server_id], capture_output=True, text=True, check=False
    )
    return out.stdout


def guest_up(nova, server) -> bool:
    return bool(GUEST_UP.search(nova.compute.get_server_console_output(server, length=200).get("output") or ""))


def test_volume_attach_detach(nova, facts, image, record):
    name = f"lcs-e2e-vol-{uuid.uuid4().hex[:8]}"
    flavor = nova.compute.find_flavor(FLAVOR, ignore_missing=False)
    server = nova.compute.create_server(
        name=name, image_id=image["image_id"], flavor_id=flavor.id, networks=[{"uuid": facts["network_id"]}]
    )
    volume_id = None
    try:
        try:
            server = nova.compute.wait_for_server(server, status="ACTIVE", wait=BOOT_TIMEOUT_S)
            wait_until(lambda: guest_up(nova, server), timeout_s=BOOT_TIMEOUT_S, interval_s=5, what="the guest's boot")
        except Exception as e:
            raise AssertionError(f"{e}\n{nova_view(nova, [nova.compute.get_server(server.id)])}") from None

        volumes, compute = nova.block_storage, nova.compute
        body = {"volume": {"size": VOLUME_GIB, "name": name, "metadata": {"jupyterhub-user": "e2e"}}}
        r = record("create_volume", "Cinder v3: create a 1 GiB volume", volumes.post, "/volumes", json=body)
        assert r.status_code == 202, r.text
        volume_id = r.json()["volume"]["id"]
        record("get_volume", "the volume just after its create", volumes.get, f"/volumes/{volume_id}")
        wait_volume(nova, volume_id, "available", VOLUME_TIMEOUT_S)
        r = record("get_volume", "the volume once available", volumes.get, f"/volumes/{volume_id}")
        assert r.json()["volume"]["size"] == VOLUME_GIB

        attachments = f"/servers/{server.id}/os-volume_attachments"
        r = record(
            "attach_volume",
            "Nova: attach the volume to the running server",
            compute.post,
            attachments,
            json={"volumeAttachment": {"volumeId": volume_id}},
        )
        assert r.status_code == 200, r.text
        wait_volume(nova, volume_id, "in-use", VOLUME_TIMEOUT_S)
        r = record("get_volume", "the volume in-use, with its attachment", volumes.get, f"/volumes/{volume_id}")
        assert [a["server_id"] for a in r.json()["volume"]["attachments"]] == [server.id]
        r = record("list_volume_attachments", "the server's attachments", compute.get, attachments)
        assert [a["volumeId"] for a in r.json()["volumeAttachments"]] == [volume_id]
        record("get_volume_attachment", "one attachment", compute.get, f"{attachments}/{volume_id}")
        disks = libvirt_disks(server.id)
        assert f"volumes/volume-{volume_id}" in disks and "protocol='rbd'" in disks, disks

        r = record("detach_volume", "Nova: detach the volume", compute.delete, f"{attachments}/{volume_id}")
        assert r.status_code == 202, r.text
        record("get_volume", "the volume right after the detach request", volumes.get, f"/volumes/{volume_id}")
        wait_volume(nova, volume_id, "available", DETACH_TIMEOUT_S)
        r = record("get_volume", "the volume available again, no attachment", volumes.get, f"/volumes/{volume_id}")
        assert r.json()["volume"]["attachments"] == []
        assert f"volume-{volume_id}" not in libvirt_disks(server.id)

        r = record("delete_volume", "Cinder v3: delete the volume", volumes.delete, f"/volumes/{volume_id}")
        assert r.status_code == 202, r.text
        wait_volume(nova, volume_id, None, VOLUME_TIMEOUT_S)
        r = record("get_volume", "the deleted volume: 404", volumes.get, f"/volumes/{volume_id}")
        assert r.status_code == 404
        volume_id = None
    finally:
        _clean_up(nova, server.id, volume_id)
    leftovers = [v["name"] for v in nova.block_storage.get("/volumes").json()["volumes"] if v["name"] == name]
    assert not leftovers and nova.compute.find_server(name) is None, f"left behind: volumes {leftovers}"


def _clean_up(nova, server_id: str, volume_id: str | None) -> None:
    """Delete the server (Nova detaches its volumes), then the volume; wait until both are gone."""
    nova.compute.delete_server(server_id, ignore_missing=True)
    wait_until(
        lambda: nova.compute.find_server(server_id) is None,
        timeout_s=VOLUME_TIMEOUT_S,
        interval_s=GUEST_POLL_S,
        what=f"server {server_id} to be gone",
    )
    if volume_id is None or volume_status(nova, volume_id) is None:
        return
    wait_until(
        lambda: volume_status(nova, volume_id) not in ("in-use", "attaching", "detaching"),
        timeout_s=DETACH_TIMEOUT_S,
        interval_s=GUEST_POLL_S,
        what=f"volume {volume_id} to be released",
    )
    nova.block_storage.delete(f"/volumes/{volume_id}")
    wait_volume(nova, volume_id, None, VOLUME_TIMEOUT_S)


def test_volume_rename_and_retag(nova):
    """What a named server's rename does to its home volume: ``PUT /volumes/{id}`` with a new name and the
    volume's whole metadata (Cinder replaces the metadata with the body's). Recorded under ``update/``."""
    directory = os.environ.get("LCS_RECORD_DIR")
    record = Recorder(Path(directory) / "update" if directory else None)
    volumes = nova.block_storage
    name = f"lcs-e2e-vol-{uuid.uuid4().hex[:8]}"
    meta = {"jupyterhub-user": "e2e", "jupyterhub-server-name": "old"}
    r = volumes.post("/volumes", json={"volume": {"size": VOLUME_GIB, "name": name, "metadata": meta}})
    assert r.status_code == 202, r.text
    volume_id = r.json()["volume"]["id"]
    try:
        wait_volume(nova, volume_id, "available", VOLUME_TIMEOUT_S)
        renamed = {"name": name + "-new", "metadata": {"jupyterhub-user": "e2e", "jupyterhub-server-name": "new"}}
        r = record("update_volume", "Cinder v3: rename and retag", volumes.put, f"/volumes/{volume_id}",
                   json={"volume": renamed})  # fmt: skip
        assert r.status_code == 200, r.text
        r = record("get_volume", "the renamed volume", volumes.get, f"/volumes/{volume_id}")
        body = r.json()["volume"]
        assert body["name"] == name + "-new"
        assert body["metadata"] == renamed["metadata"]
        r = record(
            "update_volume", "Cinder v3: metadata without a key drops it", volumes.put, f"/volumes/{volume_id}",
            json={"volume": {"metadata": {"jupyterhub-user": "e2e"}}},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        assert volumes.get(f"/volumes/{volume_id}").json()["volume"]["metadata"] == {"jupyterhub-user": "e2e"}
    finally:
        volumes.delete(f"/volumes/{volume_id}")
        wait_volume(nova, volume_id, None, VOLUME_TIMEOUT_S)
