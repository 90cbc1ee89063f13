"""Limits hold with this spawner: JupyterHub's own (named servers per user, active servers, concurrent
spawns) and the spawner's ``max_instances``, each refusing before any cloud call."""

from __future__ import annotations

import pytest

from testkit.hub import original_config, running_hub, spawn_ready

pytestmark = pytest.mark.hub

JUPYTERHUB_LIMITS = """
c.JupyterHub.named_server_limit_per_user = 1
c.JupyterHub.active_server_limit = 2
c.JupyterHub.concurrent_spawn_limit = 1
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory, double):
    with running_hub(tmp_path_factory.mktemp("hublimits"), double, original_config(double.url), JUPYTERHUB_LIMITS) as h:
        yield h


@pytest.fixture(scope="module")
def small_hub(tmp_path_factory, double):
    extra = "c.LibcloudSpawner.max_instances = 1\n"
    with running_hub(tmp_path_factory.mktemp("hubfull"), double, original_config(double.url), extra) as h:
        yield h


@pytest.fixture(autouse=True)
def clean_double(double):
    yield
    double.client.set_config(boot_delay_s=0.0)


def creates(double) -> int:
    return double.client.call_counts()["by_route"].get("POST /v2.1/servers", 0)


def stop_all(hub, *servers: tuple[str, str]) -> None:
    for user, server in servers:
        assert hub.api("DELETE", hub.server_url(user, server)).status_code in (202, 204, 400)
    for user, server in servers:
        hub.wait_gone(user, server)


def test_concurrent_spawn_limit_holds(hub, double):
    double.client.set_config(boot_delay_s=15)  # the first spawn stays pending (Jupyter not answering yet)
    hub.create_user("cora")
    hub.create_user("carl")
    assert hub.api("POST", "/users/cora/server", json={}).status_code == 202
    before = creates(double)
    r = hub.api("POST", "/users/carl/server", json={})
    assert r.status_code == 429, r.text
    assert creates(double) == before
    double.client.set_config(boot_delay_s=0.0)
    hub.wait_ready("cora")
    stop_all(hub, ("cora", ""))


def test_active_server_limit_holds(hub, double):
    spawn_ready(hub, double, "ada")
    spawn_ready(hub, double, "abe")
    hub.create_user("amy")
    before = creates(double)
    r = hub.api("POST", "/users/amy/server", json={})
    assert r.status_code == 429, r.text
    assert "limit" in r.json()["message"].lower()
    assert creates(double) == before
    stop_all(hub, ("ada", ""), ("abe", ""))


def test_named_server_limit_per_user_holds(hub, double):
    hub.create_user("nina")
    assert hub.api("POST", "/users/nina/servers/one", json={}).status_code in (201, 202)
    hub.wait_ready("nina", "one")
    before = creates(double)
    r = hub.api("POST", "/users/nina/servers/two", json={})
    assert r.status_code == 400 and "maximum of 1 named servers" in r.json()["message"], r.text
    assert creates(double) == before
    stop_all(hub, ("nina", "one"))


def test_max_instances_refuses_a_start_with_429_and_no_cloud_call(small_hub, double):
    spawn_ready(small_hub, double, "first")
    small_hub.create_user("second")
    before = creates(double)
    r = small_hub.api("POST", "/users/second/server", json={})
    assert r.status_code == 429, r.text
    assert "This hub is full" in r.json()["message"]
    assert creates(double) == before
    stop_all(small_hub, ("first", ""))
    spawn_ready(small_hub, double, "second")  # room again once the first server's instance is gone
    stop_all(small_hub, ("second", ""))
