"""Neutron ports: the double against ``recordings/ports/`` (recorded on the dev cloud), and the spawner's port
calls (``ports.py``, ``cloud.py``'s create on a port) with the REAL libcloud OpenStack 2.0 driver against it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from libcloud.common.exceptions import BaseHTTPError

from libcloudspawner import deletions, ports
from libcloudspawner.cloud import CloudClient, make_driver_factory
from libcloudspawner.naming import TAG_HUB_ID
from libcloudspawner.provision import Provisioner
from libcloudspawner.settings import CloudSettings
from testkit.osdouble.fixture import DoubleHandle
from tests.unit.test_volumes_double import arguments

RECORDED = Path(__file__).resolve().parents[2] / "testkit" / "osdouble" / "recordings" / "ports"
HUB = "hub-ports"


def recorded(name: str) -> dict:
    return json.loads((RECORDED / name).read_text())["response"]


@pytest.fixture
async def client(volume_cloud: DoubleHandle) -> AsyncIterator[CloudClient]:
    settings = CloudSettings(api_max_workers=2, api_timeout_seconds=10, api_retries=2, api_backoff_base_seconds=0.05,
                             api_backoff_max_seconds=0.1)  # fmt: skip
    c = CloudClient(make_driver_factory(arguments(volume_cloud)), settings)
    yield c
    c.close()


async def neutron(client: CloudClient, path: str, method: str = "GET", data: dict | None = None) -> tuple[int, dict]:
    def request(driver):
        try:
            r = driver.network_connection.request(path, method=method, data=data)
            return r.status, r.object or {}
        except BaseHTTPError as e:  # libcloud keeps only the message: the body as Neutron sent it
            return e.code, json.loads(driver.network_connection.connection.response.text)

    return await client.call(request)


async def new_port(client: CloudClient, name: str = "jupyter-alice", hub_id: str = HUB) -> ports.Port:
    network = await client.network("flatnet")
    group = await client.security_group("default")
    return await ports.create_port(client, name=name, network_id=network.id, group_ids=[group.id], hub_id=hub_id)


async def test_a_new_port_has_the_recorded_keys_and_an_address(client):
    network = await client.network("flatnet")
    body = {"port": {"name": "p", "description": "d", "network_id": network.id, "admin_state_up": True}}
    status, created = await neutron(client, "/v2.0/ports", "POST", body)
    want = recorded("008-POST-v2_0_ports-201.json")
    assert status == want["status"] == 201
    assert list(created["port"]) == list(want["body"]["json"]["port"])
    assert (created["port"]["status"], created["port"]["device_id"], created["port"]["device_owner"]) == (
        "DOWN",
        "",
        "",
    )
    assert created["port"]["fixed_ips"][0]["ip_address"].startswith("127.0.0.")
    status, got = await neutron(client, f"/v2.0/ports/{created['port']['id']}")
    assert list(got["port"]) == list(recorded("016-GET-v2_0_ports_ID-200.json")["body"]["json"]["port"])


async def test_a_server_on_a_port_takes_its_address_then_leaves_the_port_unbound(client, volume_cloud):
    port = await new_port(client)
    size, image = await client.size("m1.small"), await client.image("debian-12-jupyter")
    instance = await client.create_node({"name": "jupyter-alice", "size": size, "image": image, "port_id": port.id})
    volume_cloud.client.wait_for_server(instance.id, status="ACTIVE", timeout_s=20)
    running = await client.get_node(instance.id)
    assert running is not None and (running.public_ips + running.private_ips) == port.addresses
    [bound] = await ports.find_ports(client, hub_id=HUB, name="jupyter-alice")
    assert (bound.device_id, bound.bound) == (instance.id, True)
    _, view = await neutron(client, f"/v2.0/ports/{port.id}")
    assert (view["port"]["status"], view["port"]["device_owner"]) == ("ACTIVE", "compute:nova")
    await client.destroy_node(instance.id)
    volume_cloud.client.wait_for_server(instance.id, status="DELETED", timeout_s=20)
    [kept] = await ports.find_ports(client, hub_id=HUB, name="jupyter-alice")
    assert (kept.id, kept.bound, kept.addresses) == (port.id, False, port.addresses)  # as recorded (021)
    await ports.delete_port(client, port.id)
    await ports.delete_port(client, port.id)  # already gone: fine
    assert await ports.find_ports(client, hub_id=HUB) == []


async def test_find_ports_sees_only_this_hubs(client):
    ours = await new_port(client, "jupyter-alice")
    await new_port(client, "jupyter-alice", hub_id="another-hub")
    assert [p.id for p in await ports.find_ports(client, hub_id=HUB)] == [ours.id]
    assert await ports.find_ports(client, hub_id=HUB, name="jupyter-bob") == []


@pytest.mark.parametrize(
    ("recording", "change"),
    [
        ("023-GET-v2_0_ports_ID-404.json", "deleted port"),
        ("025-POST-v2_0_ports-404.json", "unknown network"),
        ("026-POST-v2_0_ports-404.json", "unknown security group"),
    ],
)
async def test_refusals_are_neutrons(client, recording, change):
    network = await client.network("flatnet")
    unknown = "00000000-0000-0000-0000-000000000000"
    if change == "deleted port":
        port = await new_port(client)
        await ports.delete_port(client, port.id)
        status, body = await neutron(client, f"/v2.0/ports/{port.id}")
        ident = port.id
    else:
        port_body = {"name": "p", "network_id": unknown if change == "unknown network" else network.id}
        if change == "unknown security group":
            port_body["security_groups"] = [unknown]
        status, body = await neutron(client, "/v2.0/ports", "POST", {"port": port_body})
        ident = unknown
    want = recorded(recording)
    expected = json.loads(json.dumps(want["body"]["json"]).replace("8ba3c867-adb0-4ccb-bdfb-9ced5724e40d", ident))
    assert (status, body) == (want["status"], expected)


def provisioner(client: CloudClient, with_ports: bool) -> Provisioner:
    return Provisioner(client, log=logging.getLogger("test"), log_name="alice", poll_interval_seconds=0.1,
                       stop_timeout_seconds=20, ports=with_ports)  # fmt: skip


@pytest.mark.parametrize("internal_ssl", [False, True])
async def test_a_stop_deletes_the_port_only_with_internal_ssl_and_calls_neutron_only_then(
    client, volume_cloud, internal_ssl
):
    port = await new_port(client) if internal_ssl else None
    size, image = await client.size("m1.small"), await client.image("debian-12-jupyter")
    request = {"name": "jupyter-alice", "size": size, "image": image, "port_id": port.id if port else None}
    instance = await client.create_node(request)
    volume_cloud.client.wait_for_server(instance.id, status="ACTIVE", timeout_s=20)
    before = len(volume_cloud.client.calls())
    await provisioner(client, internal_ssl).delete(instance.id, "jupyter-alice", {TAG_HUB_ID: HUB})
    port_calls = [c for c in volume_cloud.client.calls()[before:] if c["path"].startswith("/v2.0/ports")]
    assert bool(port_calls) == internal_ssl
    assert await ports.find_ports(client, hub_id=HUB) == []


@pytest.mark.parametrize("with_hub_id", [False, True])
async def test_a_recorded_deletion_takes_the_port_once_the_instance_is_gone_only_when_recorded_with_the_hub(
    client, volume_cloud, tmp_path, with_hub_id
):
    port = await new_port(client)
    size, image = await client.size("m1.small"), await client.image("debian-12-jupyter")
    instance = await client.create_node({"name": "jupyter-alice", "size": size, "image": image, "port_id": port.id})
    volume_cloud.client.wait_for_server(instance.id, status="ACTIVE", timeout_s=20)
    record = deletions.DurableDeletions(tmp_path / deletions.FILE_NAME)
    record.add(instance.id, "jupyter-alice", "alice", ports_of_hub=HUB if with_hub_id else "")
    await asyncio.wait_for(record.retry_until_gone(client, logging.getLogger("test")), timeout=30)
    assert record.entries() == []
    assert await client.get_node(instance.id) is None
    left = [p.id for p in await ports.find_ports(client, hub_id=HUB)]
    assert left == ([] if with_hub_id else [port.id])
