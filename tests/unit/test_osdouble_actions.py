"""The double's Nova server actions (os-stop, os-start, shelve, unshelve) and block device mappings at create,
through the spawner's CloudClient and the REAL libcloud OpenStack 2.0 driver, behaving as Nova does: the
states each action goes through and reaches, 409 from a state Nova refuses it in, the guest's processes
stopped and started again, a volume mapped at boot attached and never deleted with the server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from libcloudspawner.cloud import CloudClient, CloudError, make_driver_factory
from libcloudspawner.requests import create_request
from libcloudspawner.resume import Keeper
from libcloudspawner.settings import CloudSettings
from testkit.osdouble.fixture import DoubleHandle
from tests.unit.test_volumes_double import arguments


@pytest.fixture
async def client(volume_cloud: DoubleHandle) -> AsyncIterator[CloudClient]:
    settings = CloudSettings(api_max_workers=2, api_timeout_seconds=10, api_retries=1, api_backoff_base_seconds=0.05,
                             api_backoff_max_seconds=0.1)  # fmt: skip
    c = CloudClient(make_driver_factory(arguments(volume_cloud)), settings)
    yield c
    c.close()


async def boot(cloud: DoubleHandle, client: CloudClient, name: str, volume_ids=(), wait: bool = True) -> str:
    size, image = await client.size("m1.small"), await client.image("debian-12-jupyter")
    request = create_request(name=name, image=image, size=size, networks=[], user_data="", tags={},
                             volume_ids=list(volume_ids))  # fmt: skip
    request.pop("ex_userdata")
    instance = await client.create_node(request)
    if wait:
        cloud.client.wait_for_server(instance.id, status="ACTIVE", timeout_s=20)
    return instance.id


def keeper(client: CloudClient) -> Keeper:
    return Keeper(client, logging.getLogger("test"), "alice", poll_interval_seconds=0.1, timeout_seconds=20)


async def test_stop_start_shelve_unshelve_go_through_novas_states(volume_cloud, client):
    server_id = await boot(volume_cloud, client, "actions")
    await keeper(client).park(server_id, "stop")
    stopped = await client.get_node(server_id)
    assert (stopped.state, stopped.vm_state) == ("stopped", "stopped")
    assert volume_cloud.client.server(server_id)["pids"] == []

    await keeper(client).wake(stopped)
    assert volume_cloud.client.wait_for_server(server_id, status="ACTIVE", timeout_s=20)["task_state"] is None

    await keeper(client).park(server_id, "shelve")
    shelved = await client.get_node(server_id)
    assert (shelved.state, shelved.vm_state) == ("unknown", "shelved_offloaded")  # libcloud has no SHELVED state
    await keeper(client).wake(shelved)
    volume_cloud.client.wait_for_server(server_id, status="ACTIVE", timeout_s=20)
    await client.destroy_node(server_id)


@pytest.mark.parametrize(
    ("action", "message"),
    [("os-start", "while it is in vm_state active"), ("unshelve", "while it is in vm_state active")],
)
async def test_an_action_from_a_state_nova_refuses_is_a_409(volume_cloud, client, action, message):
    server_id = await boot(volume_cloud, client, f"refused-{action}")
    with pytest.raises(CloudError, match=message) as caught:
        await client.server_action(server_id, action)
    assert caught.value.status == 409
    await client.destroy_node(server_id)


async def test_a_volume_mapped_at_boot_is_attached_and_outlives_the_server(volume_cloud, client):
    volume = await client.create_volume("home-bdm", 1, metadata={})
    volume_cloud.client.wait_for_volume(volume.id, "available")
    server_id = await boot(volume_cloud, client, "bdm", [volume.id])
    assert (await client.get_volume(volume.id)).attached_to == (server_id,)
    with pytest.raises(CloudError, match="status must be available") as caught:
        await boot(volume_cloud, client, "bdm-twice", [volume.id], wait=False)
    assert caught.value.status == 400
    await client.destroy_node(server_id)
    assert volume_cloud.client.wait_for_volume(volume.id, "available")["attachment"] is None


async def test_a_failed_build_gives_its_volume_back(volume_cloud, client):
    volume = await client.create_volume("home-failed", 1, metadata={})
    volume_cloud.client.wait_for_volume(volume.id, "available")
    volume_cloud.client.add_fault({"type": "build_error", "fault": {"message": "Failure prepping block device."}},
                                  method="POST", path="^/v2.1/servers$", times=1)  # fmt: skip
    server_id = await boot(volume_cloud, client, "bdm-failed", [volume.id], wait=False)
    volume_cloud.client.wait_for_server(server_id, status="ERROR", timeout_s=20)
    assert volume_cloud.client.wait_for_volume(volume.id, "available")["attachment"] is None
    await client.destroy_node(server_id)
