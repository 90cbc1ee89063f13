"""cloud.py's volume calls and volumes.py's home volumes with the REAL libcloud OpenStack 2.0 driver against
the API double's Cinder v3 and Nova volume attachments (faults included)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from libcloudspawner.cloud import CloudClient, CloudConfigError, CloudError, make_driver_factory
from libcloudspawner.config import DriverArguments
from libcloudspawner.naming import TAG_USER
from libcloudspawner.settings import CloudSettings
from libcloudspawner.volumes import HomeVolumeError, HomeVolumes, HomeVolumeSettings, home_volume_ref
from testkit.osdouble.fixture import DoubleHandle

TEMPLATE = "jupyter-home-{username}"


@pytest.fixture
def cloud(volume_cloud: DoubleHandle) -> DoubleHandle:
    return volume_cloud


def arguments(double: DoubleHandle, api_version: str = "2.0") -> DriverArguments:
    return DriverArguments(
        provider="openstack", key="jupyter", secret="secret",
        kwargs={"ex_force_auth_version": "3.x_password", "ex_force_auth_url": double.url, "api_version": api_version,
                "ex_force_service_region": "RegionOne", "ex_tenant_name": "jupyter", "ex_domain_name": "Default"},
    )  # fmt: skip


@pytest.fixture
async def client(cloud: DoubleHandle) -> AsyncIterator[CloudClient]:
    settings = CloudSettings(api_max_workers=2, api_timeout_seconds=10, api_retries=2, api_backoff_base_seconds=0.05,
                             api_backoff_max_seconds=0.1)  # fmt: skip
    c = CloudClient(make_driver_factory(arguments(cloud)), settings)
    yield c
    c.close()


def homes(client: CloudClient, reports: list[str] | None = None, **kw: Any) -> HomeVolumes:
    settings = HomeVolumeSettings(**{"size_gib": 1, "poll_interval_seconds": 0.05, "create_timeout_seconds": 10,
                                     "attach_timeout_seconds": 10, "detach_timeout_seconds": 10, **kw})  # fmt: skip
    return HomeVolumes(client, settings, log=logging.getLogger("test"), log_name="alice",
                       report=reports.append if reports is not None else None)  # fmt: skip


def ref(username: str = "alice", hub_id: str = "hub-1") -> Any:
    return home_volume_ref(TEMPLATE, hub_id=hub_id, username=username, servername="")


async def server(cloud: DoubleHandle, client: CloudClient, name: str = "jupyter-alice") -> str:
    size, image = await client.size("m1.small"), await client.image("debian-12-jupyter")
    instance = await client.create_node({"name": name, "size": size, "image": image})
    cloud.client.wait_for_server(instance.id, status="ACTIVE", timeout_s=20)
    return instance.id


def counts(cloud: DoubleHandle, route: str) -> int:
    return sum(n for k, n in cloud.client.call_counts()["by_route"].items() if k == route)


# ---------------------------------------------------------------------------------------- cloud.py


async def test_create_volume_carries_name_size_type_and_tags(cloud: DoubleHandle, client: CloudClient) -> None:
    cloud.client.set_catalogue(volume_types=[{"name": "__DEFAULT__"}, {"name": "ssd"}])
    volume = await client.create_volume("home-x", 3, volume_type="ssd", metadata={TAG_USER: "x"})
    assert (volume.name, volume.size_gib, volume.volume_type, volume.status, dict(volume.metadata or {})) == (
        "home-x",
        3,
        "ssd",
        "creating",
        {TAG_USER: "x"},
    )


async def test_find_volumes_matches_name_and_tags(cloud: DoubleHandle, client: CloudClient) -> None:
    await client.create_volume("home-a", 1, metadata={TAG_USER: "a"})
    await client.create_volume("home-a", 1, metadata={TAG_USER: "b"})
    await client.create_volume("home-c", 1, metadata={TAG_USER: "a"})
    found = await client.find_volumes(name="home-a", tags={TAG_USER: "a"})
    assert [(v.name, (v.metadata or {})[TAG_USER]) for v in found] == [("home-a", "a")]


async def test_get_of_a_deleted_volume_is_none_and_delete_again_is_fine(cloud: DoubleHandle,
                                                                        client: CloudClient) -> None:  # fmt: skip
    volume = await client.create_volume("home-d", 1, metadata={})
    cloud.client.wait_for_volume(volume.id, "available", timeout_s=10)
    await client.delete_volume(volume.id)
    cloud.client.wait_for_volume(volume.id, "deleted", timeout_s=10)
    await client.delete_volume(volume.id)  # 404: gone is what was asked
    assert await client.get_volume(volume.id) is None


async def test_volume_calls_need_the_2_0_driver(cloud: DoubleHandle) -> None:
    c = CloudClient(make_driver_factory(arguments(cloud, api_version="1.1")), CloudSettings(api_max_workers=1))
    try:
        with pytest.raises(CloudConfigError, match="openstack_api_version"):
            await c.find_volumes(name="home-a", tags={})
    finally:
        c.close()


async def test_attach_is_not_retried(cloud: DoubleHandle, client: CloudClient) -> None:
    volume = await client.create_volume("home-e", 1, metadata={})
    sid = await server(cloud, client)
    cloud.client.add_fault({"type": "status", "status": 503}, method="POST", path="os-volume_attachments")
    with pytest.raises(CloudError) as err:
        await client.attach_volume(sid, volume.id)
    assert (err.value.status, counts(cloud, "POST /v2.1/servers/{id}/os-volume_attachments")) == (503, 1)


async def test_a_lost_create_is_an_unknown_outcome(cloud: DoubleHandle, client: CloudClient) -> None:
    from libcloudspawner.cloud import CreateOutcomeUnknown

    cloud.client.add_fault("lost_response", method="POST", path=r"/volumes$", nth=1)
    with pytest.raises(CreateOutcomeUnknown):
        await client.create_volume("home-f", 1, metadata={})
    assert [v["name"] for v in cloud.client.volumes()] == ["home-f"]


# ---------------------------------------------------------------------------------------- volumes.py


async def test_home_volume_lifecycle(cloud: DoubleHandle, client: CloudClient) -> None:
    reports: list[str] = []
    h = homes(client, reports)
    volume = await h.ensure(ref())
    first = await server(cloud, client, "jupyter-alice")
    attached = await h.attach(volume.id, first)
    assert (attached.status, attached.attached_to, attached.device) == ("in-use", (first,), "/dev/vdb")
    assert await h.detach(volume.id, first) is True
    again = await h.ensure(ref())
    assert again.id == volume.id  # found by name and tags: one volume per user
    second = await server(cloud, client, "jupyter-alice-2")
    assert (await h.attach(volume.id, second)).attached_to == (second,)
    assert await h.delete_forever(ref()) == [volume.id]
    cloud.client.wait_for_volume(volume.id, "deleted", timeout_s=10)
    assert reports[:2] == ["Creating your home volume (1 GiB)", "Attaching your home volume"]


async def test_a_lost_create_makes_no_second_volume(cloud: DoubleHandle, client: CloudClient) -> None:
    cloud.client.add_fault("lost_response", method="POST", path=r"/volumes$", nth=1)
    volume = await homes(client).ensure(ref())
    assert [v["id"] for v in cloud.client.volumes()] == [volume.id]


async def test_delete_forever_leaves_other_users_and_hubs_alone(cloud: DoubleHandle, client: CloudClient) -> None:
    h = homes(client)
    mine = await h.ensure(ref())
    bobs = await h.ensure(ref("bob"))
    other_hubs = await h.ensure(ref(hub_id="hub-2"))
    assert await h.delete_forever(ref()) == [mine.id]
    kept = {v["id"] for v in cloud.client.volumes() if v["status"] != "deleting"}
    assert kept == {bobs.id, other_hubs.id}


async def test_delete_forever_detaches_an_attached_volume(cloud: DoubleHandle, client: CloudClient) -> None:
    h = homes(client)
    volume = await h.ensure(ref())
    await h.attach(volume.id, await server(cloud, client))
    assert await h.delete_forever(ref()) == [volume.id]


async def test_attach_while_attached_to_another_server_is_refused(cloud: DoubleHandle, client: CloudClient) -> None:
    h = homes(client)
    volume = await h.ensure(ref())
    await h.attach(volume.id, await server(cloud, client, "jupyter-alice"))
    with pytest.raises(HomeVolumeError) as err:
        await h.attach(volume.id, await server(cloud, client, "jupyter-alice--gpu"))
    assert err.value.reason == "attached-elsewhere"


async def test_volume_stuck_in_error(cloud: DoubleHandle, client: CloudClient) -> None:
    h = homes(client)
    volume = await h.ensure(ref())
    cloud.client.set_volume_status(volume.id, "error")
    with pytest.raises(HomeVolumeError) as err:
        await h.attach(volume.id, await server(cloud, client))
    assert (err.value.reason, err.value.volume_id) == ("error", volume.id)


async def test_volume_created_in_error(cloud: DoubleHandle, client: CloudClient) -> None:
    cloud.client.add_fault({"type": "volume", "status": "error"}, method="POST", path=r"/volumes$")
    with pytest.raises(HomeVolumeError) as err:
        await homes(client).ensure(ref())
    assert err.value.reason == "error"


async def test_attach_that_fails_on_the_host(cloud: DoubleHandle, client: CloudClient) -> None:
    h = homes(client)
    volume = await h.ensure(ref())
    sid = await server(cloud, client)
    cloud.client.add_fault({"type": "volume", "status": "available"}, method="POST", path="os-volume_attachments")
    with pytest.raises(HomeVolumeError) as err:
        await h.attach(volume.id, sid)
    assert (err.value.reason, cloud.client.volume(volume.id)["status"]) == ("attach-failed", "available")


async def test_slow_detach_is_reported_then_the_next_attach_waits(cloud: DoubleHandle, client: CloudClient) -> None:
    reports: list[str] = []
    h = homes(client, reports, detach_timeout_seconds=0.5)
    volume = await h.ensure(ref())
    first = await server(cloud, client)
    await h.attach(volume.id, first)
    cloud.client.add_fault({"type": "volume", "seconds": 2}, method="DELETE", path="os-volume_attachments")
    assert await h.detach(volume.id, first) is False
    assert reports[-1] == "Your home volume is still detaching; it is kept"
    patient = homes(client, reports, detach_timeout_seconds=10)
    attached = await patient.attach(volume.id, await server(cloud, client, "jupyter-alice-2"))
    assert attached.status == "in-use" and "Waiting for your home volume to be free" in reports
