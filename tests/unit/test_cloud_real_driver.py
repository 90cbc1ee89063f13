"""cloud.py's CloudClient with the REAL libcloud OpenStack driver against the API double.

What the fake driver of test_cloud.py cannot show: states that libcloud itself gets into. Found by the fault
campaign in CI (a VM leaked: its delete failed with "'NoneType' object has no attribute 'get_endpoint'").

libcloud's Keystone v3 connection, given a token from the shared cache, stores the token on itself and then
fetches the service catalog for it (GET /v3/auth/tokens). When that GET fails (API down, connection reset),
the connection keeps the token but has no catalog: from then on it believes it is authenticated and every
call on that driver fails with an AttributeError, which is no cloud error and was not retried.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import requests

from libcloudspawner.cloud import CloudClient, make_driver_factory
from libcloudspawner.config import DriverArguments
from libcloudspawner.settings import CloudSettings
from testkit.osdouble.fixture import DoubleHandle

TOKENS = r"^/v3/auth/tokens$"


def arguments(double: DoubleHandle) -> DriverArguments:
    return DriverArguments(
        provider="openstack", key="jupyter", secret="secret",
        kwargs={"ex_force_auth_version": "3.x_password", "ex_force_auth_url": double.url,
                "ex_force_service_region": "RegionOne", "ex_tenant_name": "jupyter", "ex_domain_name": "Default"},
    )  # fmt: skip


def client_for(double: DoubleHandle) -> CloudClient:
    # one worker: every call runs on the same thread, so "a new driver" is only what the client decides
    settings = CloudSettings(api_max_workers=1, api_timeout_seconds=10, api_retries=3, api_backoff_base_seconds=0.05,
                             api_backoff_max_seconds=0.1)  # fmt: skip
    return CloudClient(make_driver_factory(arguments(double)), settings)


def new_driver_with_the_cached_token(client: CloudClient) -> None:
    """What a worker thread that has not called yet (or any driver built after another's login) starts from:
    a fresh driver, and the shared cache holding a valid token."""
    client._generation += 1


def test_libcloud_keeps_a_token_without_a_catalog_when_the_catalog_fetch_fails(default: DoubleHandle) -> None:
    """The libcloud behaviour itself, shown with two bare drivers sharing a token cache."""
    factory = make_driver_factory(arguments(default))
    first, second = factory(), factory()
    assert first.list_sizes()  # logs in (POST /v3/auth/tokens); the token goes to the shared cache
    default.client.add_fault("reset", method="GET", path=TOKENS, nth=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        second.list_sizes()  # token from the cache, then GET /v3/auth/tokens for its catalog: reset
    with pytest.raises(AttributeError, match="get_endpoint"):
        second.list_sizes()  # "authenticated", no catalog: every later call on this driver fails


def test_a_driver_that_failed_mid_login_is_rebuilt_and_the_call_retried(default: DoubleHandle) -> None:
    client = client_for(default)
    try:
        assert asyncio.run(client.call("list_sizes"))
        new_driver_with_the_cached_token(client)
        default.client.add_fault("reset", method="GET", path=TOKENS, nth=1)
        sizes = asyncio.run(client.call("list_sizes"))
        assert sizes
        fired = [c for c in default.client.calls() if c["route"] == "/v3/auth/tokens" and c["effect"]]
        assert len(fired) == 1, "the fault did not happen: this test would prove nothing"
    finally:
        client.close()


def test_a_delete_after_the_api_was_down_during_login_reaches_the_cloud(default: DoubleHandle) -> None:
    """The campaign's leak, end to end: a create, then the login of the next driver meets the API down."""
    client = client_for(default)
    try:

        async def scenario():
            sizes, images = await client.call("list_sizes"), await client.call("list_images")
            size = next(s for s in sizes if s.name == "m1.small")
            image = next(i for i in images if i.name == "debian-12-base")
            inst = await client.create_node({"name": "jupyter-leak", "size": size, "image": image})
            new_driver_with_the_cached_token(client)
            default.client.add_fault("drop", method="GET", path=TOKENS, nth=1)
            await client.destroy_node(inst.id)
            return inst.id

        iid = asyncio.run(scenario())
        deletes = [c for c in default.client.calls() if c["method"] == "DELETE" and iid in c["path"]]
        assert [c["status"] for c in deletes] == [204]
        deadline = time.monotonic() + 10
        while iid in {s["id"] for s in default.client.servers()} and time.monotonic() < deadline:
            time.sleep(0.1)
        assert iid not in {s["id"] for s in default.client.servers()}, "the instance is still there: leaked"
    finally:
        client.close()
