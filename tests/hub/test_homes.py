"""Work survives, in a real JupyterHub against the double: home volumes, stop modes, resume with the same
token, delete_forever, and no silent deletion by poll()."""

from __future__ import annotations

import asyncio
import json

import pytest

from libcloudspawner.cloud import CloudClient, make_driver_factory
from libcloudspawner.config import DriverArguments
from libcloudspawner.naming import volume_tags
from libcloudspawner.settings import CloudSettings
from testkit.hub import cloud_servers, original_config, running_hub
from testkit.wait import wait_until
from tests.hub.test_crash_and_reaper import HUB_ID, _reaper

pytestmark = pytest.mark.hub

TIMINGS = (
    "c.LibcloudSpawner.start_timeout = 60\nc.LibcloudSpawner.poll_interval = 2\n"
    "c.LibcloudSpawner.fleet_refresh_seconds = 1\nc.LibcloudSpawner.stop_timeout_seconds = 30\n"
    "c.LibcloudSpawner.home_volume_timeout_seconds = 3\n"
)
SERVERS = "^/v2.1/servers$"


def config(double, **settings) -> dict:
    return {**original_config(double.url), **settings}


@pytest.fixture(scope="module")
def delete_hub(tmp_path_factory, double):
    with running_hub(tmp_path_factory.mktemp("homes-delete"), double,
                     config(double, home_volume_size_gib=1), TIMINGS) as h:  # fmt: skip
        yield h


@pytest.fixture(scope="module")
def stop_hub(tmp_path_factory, double):
    with running_hub(tmp_path_factory.mktemp("homes-stop"), double,
                     config(double, home_volume_size_gib=1, stop_action="stop"), TIMINGS) as h:  # fmt: skip
        yield h


@pytest.fixture(scope="module")
def per_server_hub(tmp_path_factory, double):
    settings = config(double, home_volume_size_gib=1, home_volume_name_template="home-{username}--{servername}")
    with running_hub(tmp_path_factory.mktemp("homes-per-server"), double, settings, TIMINGS) as h:
        yield h


@pytest.fixture(autouse=True)
def clean_double(double):
    double.client.clear_faults()
    yield
    double.client.clear_faults()


def start(hub, user: str, options: dict | None = None, server: str = "") -> tuple[bool, str]:
    """Start a server; (True, "") once ready, or (False, the message the user was shown)."""
    hub.create_user(user)
    r = hub.api("POST", hub.server_url(user, server), json=options or {})
    if r.status_code not in (201, 202):
        return False, r.json()["message"]
    events = hub.progress(user, server, timeout_s=120)
    if events[-1].get("ready"):
        return True, ""
    assert events[-1].get("failed"), events
    return False, events[-1]["message"]


def stop(hub, user: str, server: str = "") -> None:
    r = hub.api("DELETE", hub.server_url(user, server))
    assert r.status_code in (202, 204), r.text
    hub.wait_gone(user, server)


def volumes(double, user: str) -> list[dict]:
    return [v for v in double.client.volumes() if (v.get("metadata") or {}).get("jupyterhub-user") == user]


def the_volume(double, user: str) -> dict:
    [volume] = volumes(double, user)
    return double.client.volume(volume["id"])


def attached_to(double, user: str) -> list[str]:
    attachment = the_volume(double, user)["attachment"]
    return [attachment["server_id"]] if attachment else []


def test_home_volume_created_once_and_reused(delete_hub, double):
    ok, message = start(delete_hub, "hana")
    assert ok, message
    [first] = cloud_servers(double, user="hana")
    volume_id = the_volume(double, "hana")["id"]
    assert attached_to(double, "hana") == [first["id"]]
    user_data = double.client.user_data(first["id"])
    assert "lcs-home.service" in user_data and volume_id[:20] in user_data

    stop(delete_hub, "hana")
    wait_until(lambda: not cloud_servers(double, user="hana"), timeout_s=30, what="hana's VM deleted")
    assert double.client.wait_for_volume(volume_id, "available")["id"] == volume_id

    ok, message = start(delete_hub, "hana")
    assert ok, message
    [second] = cloud_servers(double, user="hana")
    assert second["id"] != first["id"]
    assert [v["id"] for v in volumes(double, "hana")] == [volume_id]
    assert attached_to(double, "hana") == [second["id"]]
    stop(delete_hub, "hana")


def test_a_renamed_named_server_finds_its_own_volume_under_the_new_name(per_server_hub, double):
    hub = per_server_hub
    ok, message = start(hub, "rena", server="draft")
    assert ok, message
    [volume] = volumes(double, "rena")
    stop(hub, "rena", "draft")
    r = hub.api("PATCH", hub.server_url("rena", "draft"), json={"name": "thesis"})
    assert r.status_code == 200, r.text
    renamed = double.client.volume(volume["id"])
    assert renamed["name"] == "home-rena--thesis"
    assert renamed["metadata"]["jupyterhub-server-name"] == "thesis"

    ok, message = start(hub, "rena", server="thesis")
    assert ok, message
    [vm] = cloud_servers(double, user="rena")
    assert [v["id"] for v in volumes(double, "rena")] == [volume["id"]]  # the same volume, no second one
    assert attached_to(double, "rena") == [vm["id"]]
    stop(hub, "rena", "thesis")


def test_a_rename_onto_a_name_that_has_a_volume_is_refused(per_server_hub, double):
    hub = per_server_hub
    ok, message = start(hub, "rolf", server="one")
    assert ok, message
    stop(hub, "rolf", "one")
    # a volume of the name "two" left behind (e.g. a removal of server "two" that could not delete it)
    tags = volume_tags(hub_id=HUB_ID, username="rolf", servername="two")
    double.client.wait_for_volume(asyncio.run(create_volume(double, "home-rolf--two", tags)), "available")
    r = hub.api("PATCH", hub.server_url("rolf", "one"), json={"name": "two"})
    assert r.status_code == 409, r.text
    assert "home volume" in r.json()["message"]
    assert sorted(v["name"] for v in volumes(double, "rolf")) == ["home-rolf--one", "home-rolf--two"]
    servers = hub.api("GET", "/users/rolf?include_stopped_servers=1").json()["servers"]
    assert "one" in servers and "two" not in servers  # not renamed


def test_volume_in_error_is_refused_and_kept(delete_hub, double):
    ok, message = start(delete_hub, "ines")
    assert ok, message
    stop(delete_hub, "ines")
    volume_id = the_volume(double, "ines")["id"]
    double.client.wait_for_volume(volume_id, "available")
    double.client.set_volume_status(volume_id, "error")
    ok, message = start(delete_hub, "ines")
    assert not ok
    assert "home volume is in an error state" in message
    assert not cloud_servers(double, user="ines")
    assert the_volume(double, "ines")["status"] == "error"


def test_attach_failure_at_boot_keeps_the_volume(delete_hub, double):
    double.client.add_fault(
        {"type": "build_error", "fault": {"message": "Build of instance aborted: Failure prepping block device."}},
        method="POST", path=SERVERS, times=1,
    )  # fmt: skip
    ok, message = start(delete_hub, "jade")
    assert not ok
    assert "Failure prepping block device" in message
    volume_id = the_volume(double, "jade")["id"]
    double.client.wait_for_volume(volume_id, "available")
    ok, message = start(delete_hub, "jade")
    assert ok, message
    assert [v["id"] for v in volumes(double, "jade")] == [volume_id]
    stop(delete_hub, "jade")


def test_slow_detach_still_stops_and_keeps_the_volume(delete_hub, double):
    ok, message = start(delete_hub, "kira")
    assert ok, message
    volume_id = the_volume(double, "kira")["id"]
    double.client.add_fault({"type": "volume", "seconds": 60}, method="DELETE", path="os-volume_attachments",
                            times=1)  # fmt: skip
    stop(delete_hub, "kira")
    assert "still detaching" in delete_hub.log_text()
    wait_until(lambda: not cloud_servers(double, user="kira"), timeout_s=30, what="kira's VM deleted")
    double.client.wait_for_volume(volume_id, "available")
    ok, message = start(delete_hub, "kira")
    assert ok, message
    assert attached_to(double, "kira") == [cloud_servers(double, user="kira")[0]["id"]]
    stop(delete_hub, "kira")


def test_volume_attached_elsewhere_is_a_clear_refusal(delete_hub, double):
    ok, message = start(delete_hub, "lena", server="one")
    assert ok, message
    ok, message = start(delete_hub, "lena", server="two")
    assert not ok
    assert "in use by another of your servers" in message
    assert len(cloud_servers(double, user="lena")) == 1
    assert len(volumes(double, "lena")) == 1
    stop(delete_hub, "lena", "one")


def test_poll_keeps_a_vm_powered_off_behind_the_hubs_back(delete_hub, double):
    ok, message = start(delete_hub, "mila")
    assert ok, message
    [server] = cloud_servers(double, user="mila")
    double.client.power_off(server["id"])
    delete_hub.wait_gone("mila", timeout_s=60)
    [kept] = cloud_servers(double, user="mila")
    assert kept["id"] == server["id"] and kept["status"] == "SHUTOFF"
    ok, message = start(delete_hub, "mila")
    assert ok, message
    [resumed] = cloud_servers(double, user="mila")
    assert resumed["id"] == server["id"] and resumed["status"] == "ACTIVE"
    assert delete_hub.through_proxy("mila").status_code == 200
    stop(delete_hub, "mila")
    wait_until(lambda: not cloud_servers(double, user="mila"), timeout_s=30, what="mila's VM deleted")


def test_stop_mode_resumes_the_same_vm_and_token_across_a_hub_restart(stop_hub, double):
    ok, message = start(stop_hub, "nora")
    assert ok, message
    [server] = cloud_servers(double, user="nora")
    stop(stop_hub, "nora")
    assert double.client.wait_for_server(server["id"], status="SHUTOFF")["id"] == server["id"]
    assert attached_to(double, "nora") == [server["id"]]
    stop_hub.restart()
    ok, message = start(stop_hub, "nora")
    assert ok, message
    [resumed] = cloud_servers(double, user="nora")
    assert resumed["id"] == server["id"]
    r = stop_hub.through_proxy("nora")  # the server checks the request with the hub, using its kept token
    assert r.status_code == 200, r.text
    stop(stop_hub, "nora")


def test_changed_size_boots_a_fresh_vm_around_the_same_volume(stop_hub, double):
    ok, message = start(stop_hub, "olga", {"size": "m1.small"})
    assert ok, message
    [first] = cloud_servers(double, user="olga")
    volume_id = the_volume(double, "olga")["id"]
    stop(stop_hub, "olga")
    ok, message = start(stop_hub, "olga", {"size": "m1.medium"})
    assert ok, message
    [second] = cloud_servers(double, user="olga")
    assert second["id"] != first["id"] and second["flavor"] == "m1.medium"
    assert [v["id"] for v in volumes(double, "olga")] == [volume_id]
    assert attached_to(double, "olga") == [second["id"]]
    stop(stop_hub, "olga")


def test_delete_forever_removes_the_kept_vm_and_the_volume(stop_hub, double):
    ok, message = start(stop_hub, "pia")
    assert ok, message
    stop(stop_hub, "pia")
    assert cloud_servers(double, user="pia") and volumes(double, "pia")
    r = stop_hub.api("DELETE", "/users/pia")
    assert r.status_code == 204, r.text
    wait_until(lambda: not cloud_servers(double, user="pia"), timeout_s=30, what="pia's VM deleted")
    wait_until(lambda: not volumes(double, "pia"), timeout_s=30, what="pia's volume deleted")


@pytest.fixture(scope="module")
def shelve_hub(tmp_path_factory, double):
    with running_hub(tmp_path_factory.mktemp("homes-shelve"), double, config(double, stop_action="shelve"),
                     TIMINGS) as h:  # fmt: skip
        yield h


def test_shelve_mode_unshelves_and_authenticates(shelve_hub, double):
    ok, message = start(shelve_hub, "quinn")
    assert ok, message
    [server] = cloud_servers(double, user="quinn")
    stop(shelve_hub, "quinn")
    double.client.wait_for_server(server["id"], status="SHELVED_OFFLOADED")
    ok, message = start(shelve_hub, "quinn")
    assert ok, message
    [resumed] = cloud_servers(double, user="quinn")
    assert resumed["id"] == server["id"] and resumed["status"] == "ACTIVE"
    r = shelve_hub.through_proxy("quinn")
    assert r.status_code == 200, r.text
    stop(shelve_hub, "quinn")


def test_a_vm_in_error_whose_disk_may_hold_data_is_kept_and_reported(shelve_hub, double):
    ok, message = start(shelve_hub, "rhea")
    assert ok, message
    [server] = cloud_servers(double, user="rhea")
    double.client.force_error(server["id"], message="Compute host lost its disk controller")
    shelve_hub.wait_gone("rhea", timeout_s=60)
    assert [s["id"] for s in cloud_servers(double, user="rhea")] == [server["id"]]  # kept, not deleted
    assert "Compute host lost its disk controller" in shelve_hub.log_text()
    ok, message = start(shelve_hub, "rhea")
    assert not ok
    assert "kept virtual machine is in an error state (Compute host lost its disk controller)" in message
    assert [s["id"] for s in cloud_servers(double, user="rhea")] == [server["id"]]
    assert shelve_hub.api("DELETE", "/users/rhea").status_code == 204  # delete_forever removes it
    wait_until(lambda: not cloud_servers(double, user="rhea"), timeout_s=30, what="rhea's VM deleted")


def test_reaper_lists_and_deletes_only_volumes_of_gone_users(delete_hub, double):
    ok, message = start(delete_hub, "rosa")
    assert ok, message
    stop(delete_hub, "rosa")
    kept = the_volume(double, "rosa")["id"]
    ghost = asyncio.run(create_volume(double, "jupyter-home-ghost", volume_tags(hub_id=HUB_ID, username="ghost",
                                                                                servername="")))  # fmt: skip
    other = asyncio.run(
        create_volume(double, "jupyter-home-ghost", volume_tags(hub_id="another-hub", username="ghost", servername=""))
    )
    for volume_id in (ghost, other):
        double.client.wait_for_volume(volume_id, "available")

    dry = _reaper(delete_hub)
    assert dry.returncode == 0, dry.stderr
    judged = {v["instance_id"]: v["orphan"] for v in map(json.loads, dry.stdout.splitlines()) if v["kind"] == "volume"}
    assert judged[ghost] is True and judged[kept] is False
    assert other not in judged
    assert ghost in {v["id"] for v in double.client.volumes()}  # dry run: nothing deleted

    wet = _reaper(delete_hub, "--delete")
    assert wet.returncode == 0, wet.stderr
    double.client.wait_for_volume(ghost, "deleted")
    assert {kept, other} <= {v["id"] for v in double.client.volumes()}


async def create_volume(double, name: str, tags: dict[str, str]) -> str:
    params = original_config(double.url)["libcloudparams"]
    kwargs = {k: v for k, v in params.items() if k not in ("arg_user_id", "arg_key")}
    arguments = DriverArguments(provider="openstack", key=params["arg_user_id"], secret=params["arg_key"],
                                kwargs={**kwargs, "api_version": "2.0"})  # fmt: skip
    client = CloudClient(make_driver_factory(arguments), CloudSettings(api_max_workers=1))
    try:
        return (await client.create_volume(name, 1, metadata=tags)).id
    finally:
        client.close()
