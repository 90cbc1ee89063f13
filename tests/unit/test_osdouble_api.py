"""The double against the REAL libcloud OpenStack driver: same results as the recordings, and every fault.

The double runs as a subprocess (as the hub tests use it); libcloud talks to it over HTTP with the
constructor arguments of the recordings. With the ``recorded`` catalogue the double serves the recorded
cloud (same ids), so libcloud's objects are compared field by field with ``recordings/*/calls.json``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from libcloud.common.exceptions import BaseHTTPError
from libcloud.common.types import InvalidCredsError

from testkit.osdouble.catalogue import load_recording, recorded_calls
from testkit.osdouble.fixture import DoubleHandle, by_name, keystone_token, node_state, states_until_error
from testkit.osdouble.fixture import libcloud_driver as driver
from testkit.wait import wait_until

RECORDED_BASES = ("http://127.0.0.1:8774", "http://127.0.0.1:9292", "http://127.0.0.1:9696")
USER_DATA = "#cloud-config\nruncmd:\n  - [systemctl, daemon-reload]\n"
RECORDED_META = {"jupyterhub-user": "alice", "jupyterhub-server-name": "", "spawner": "libcloud"}


def recorded_result(driver_dir: str, call: str, purpose_part: str = "") -> dict[str, Any]:
    return next(c for c in recorded_calls(driver_dir) if c["call"] == call and purpose_part in c["purpose"])


def rebase(value: Any, url: str) -> Any:
    """Recorded hrefs point at Nova/Glance/Neutron ports; the double serves them all on its one port."""
    if isinstance(value, str):
        for base in RECORDED_BASES:
            value = value.replace(base, url)
        return value
    if isinstance(value, dict):
        return {k: rebase(v, url) for k, v in value.items()}
    if isinstance(value, list):
        return [rebase(v, url) for v in value]
    return value


# ---------------------------------------------------------------------------------------- lists


@pytest.mark.parametrize(("api_version", "driver_dir"), [(None, "default-driver"), ("2.0", "api-2.0")])
def test_list_images_as_recorded(recorded: DoubleHandle, api_version: str | None, driver_dir: str) -> None:
    images = driver(recorded, api_version).list_images()
    expected = recorded_result(driver_dir, "list_images")["result"]
    assert [(i.id, i.name, i.extra) for i in images] == [(e["id"], e["name"], e["extra"]) for e in expected]


@pytest.mark.parametrize(("api_version", "driver_dir"), [(None, "default-driver"), ("2.0", "api-2.0")])
def test_list_sizes_as_recorded(recorded: DoubleHandle, api_version: str | None, driver_dir: str) -> None:
    sizes = driver(recorded, api_version).list_sizes()
    expected = recorded_result(driver_dir, "list_sizes")["result"]
    got = [
        {
            "class": type(s).__name__,
            "id": s.id,
            "name": s.name,
            "ram": s.ram,
            "disk": s.disk,
            "vcpus": s.vcpus,
            "extra": s.extra,
        }
        for s in sizes
    ]
    assert got == expected


@pytest.mark.parametrize(("api_version", "driver_dir"), [(None, "default-driver"), ("2.0", "api-2.0")])
def test_list_networks_as_recorded(recorded: DoubleHandle, api_version: str | None, driver_dir: str) -> None:
    nets = driver(recorded, api_version).ex_list_networks()
    expected = recorded_result(driver_dir, "ex_list_networks")["result"]
    got = [{"class": type(n).__name__, "id": n.id, "name": n.name, "cidr": n.cidr, "extra": n.extra} for n in nets]
    assert got == expected


@pytest.mark.parametrize("api_version", [None, "2.0"])
def test_list_security_groups(default: DoubleHandle, api_version: str | None) -> None:
    groups = driver(default, api_version).ex_list_security_groups()
    assert [g.name for g in groups] == ["default"]


def test_api_2_0_authenticates_once_per_service(recorded: DoubleHandle) -> None:
    drv = driver(recorded, "2.0")
    drv.list_images()
    drv.list_sizes()
    drv.ex_list_networks()
    counts = recorded.client.call_counts()["by_route"]
    # as recorded in api-2.0/: 3 auths for the image, compute and network connections
    assert counts["POST /v3/auth/tokens"] == 3


# ---------------------------------------------------------------------------------------- HTTP shape


def test_keystone_answer_has_the_recorded_shape(recorded: DoubleHandle) -> None:
    rec = load_recording("default-driver/001-POST-v3_auth_tokens-201.json")["response"]
    body = rec["body"]["json"]
    req = load_recording("default-driver/001-POST-v3_auth_tokens-201.json")["request"]["body"]["json"]
    req["auth"]["identity"]["password"]["user"]["password"] = "secret"
    resp = requests.post(f"{recorded.url}/v3/auth/tokens", json=req, timeout=10)
    assert resp.status_code == rec["status"] == 201
    assert {h.lower() for h in rec["headers"]} <= {h.lower() for h in resp.headers}
    got = resp.json()["token"]
    assert set(got) == set(body["token"])
    assert got["project"] == body["token"]["project"] and got["user"] == body["token"]["user"]
    assert {s["type"] for s in got["catalog"]} >= {"compute", "image", "network", "identity"}
    for service in got["catalog"]:
        assert sorted(e["interface"] for e in service["endpoints"]) == ["admin", "internal", "public"]
        assert all(e["region_id"] == "RegionOne" and e["url"].startswith(recorded.url) for e in service["endpoints"])
    assert resp.headers["X-Subject-Token"] not in resp.text  # the token travels only in the header


@pytest.mark.parametrize(
    ("method", "path", "recording"),
    [
        ("GET", "/v2.1/flavors/detail", "default-driver/003-GET-v2_1_flavors_detail-200.json"),
        ("GET", "/v2.1/images/detail", "default-driver/002-GET-v2_1_images_detail-200.json"),
        ("GET", "/v2.1/os-networks", "default-driver/004-GET-v2_1_os_networks-200.json"),
        ("GET", "/v2/images", "api-2.0/002-GET-v2_images-200.json"),
        ("GET", "/v2.0/networks", "api-2.0/006-GET-v2_0_networks-200.json"),
    ],
)
def test_list_answers_equal_the_recordings(recorded: DoubleHandle, method: str, path: str, recording: str) -> None:
    rec = load_recording(recording)["response"]
    resp = requests.request(method, recorded.url + path, headers={"X-Auth-Token": keystone_token(recorded)}, timeout=10)
    assert resp.status_code == rec["status"]
    assert {h.lower() for h in rec["headers"]} - {"content-length"} <= {h.lower() for h in resp.headers}
    body = rec["body"]["json"]
    if path == "/v2/images":
        body = {k: v for k, v in body.items() if k != "first"} | {"first": "/v2/images"}
    assert resp.json() == rebase(body, recorded.url)


def server_keys(recording: str) -> set[str]:
    body = load_recording(recording)["response"]["body"]["json"]
    return set(body["server"] if "server" in body else body["servers"][0])


def test_server_views_have_the_recorded_keys_in_every_phase(recorded: DoubleHandle) -> None:
    drv = driver(recorded)
    images, sizes = drv.list_images(), drv.list_sizes()
    node = drv.create_node(
        name="rec-alice",
        size=by_name(sizes, "m1.jupyter"),
        image=by_name(images, "debian-12-jupyter-grubfix"),
        networks=drv.ex_list_networks(),
        ex_userdata=USER_DATA,
        ex_config_drive=True,
        ex_metadata=RECORDED_META,
    )
    headers = {"X-Auth-Token": keystone_token(recorded)}
    url = f"{recorded.url}/v2.1/servers/{node.id}"
    seen: dict[str, set[str]] = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and "active" not in seen:
        server = requests.get(url, headers=headers, timeout=10).json()["server"]
        phase = server["OS-EXT-STS:task_state"] or server["OS-EXT-STS:vm_state"]
        seen.setdefault(phase, set(server))
        time.sleep(0.05)
    assert seen["scheduling"] == server_keys("default-driver/006-GET-v2_1_servers_ID-200.json")
    assert seen["spawning"] == server_keys("default-driver/008-GET-v2_1_servers_ID-200.json")
    assert seen["active"] == server_keys("default-driver/010-GET-v2_1_servers_ID-200.json")
    listed = requests.get(f"{recorded.url}/v2.1/servers/detail", headers=headers, timeout=10).json()["servers"]
    assert set(listed[0]) == server_keys("default-driver/012-GET-v2_1_servers_detail-200.json")
    assert requests.delete(url, headers=headers, timeout=10).status_code == 204
    deleting = requests.get(url, headers=headers, timeout=10).json()["server"]
    assert set(deleting) == server_keys("default-driver/014-GET-v2_1_servers_ID-200.json")
    assert deleting["OS-EXT-STS:task_state"] == "deleting"


# ---------------------------------------------------------------------------------------- lifecycle


def test_create_poll_delete_sequence_as_recorded(recorded: DoubleHandle) -> None:
    drv = driver(recorded)
    images, sizes, nets = drv.list_images(), drv.list_sizes(), drv.ex_list_networks()
    node = drv.create_node(
        name="rec-alice",
        size=by_name(sizes, "m1.jupyter"),
        image=by_name(images, "debian-12-jupyter-grubfix"),
        networks=nets,
        ex_userdata=USER_DATA,
        ex_config_drive=True,
        ex_metadata=RECORDED_META,
    )
    expected = recorded_result("default-driver", "create_node", "POST /servers with user_data")["result"]
    assert (node.name, node.state, node.public_ips, node.private_ips) == (
        expected["name"],
        expected["state"],
        expected["public_ips"],
        expected["private_ips"],
    )
    volatile = {"password", "created", "updated", "uri", "flavor_details", "tenantId", "userId"}
    assert set(node.extra) == set(expected["extra"])
    assert {k: v for k, v in node.extra.items() if k not in volatile} == {
        k: v for k, v in expected["extra"].items() if k not in volatile
    }
    assert node.extra["flavor_details"] == rebase(expected["extra"]["flavor_details"], recorded.url)
    assert node.extra["uri"] == f"{recorded.url}/v2.1/servers/{node.id}"
    assert isinstance(node.extra["password"], str) and node.extra["password"]

    states = [node_state(node)]
    while states[-1] != ("running", None):
        current = node_state(drv.ex_get_node_details(node.id))
        if current != states[-1]:
            states.append(current)
        assert len(states) < 10
        time.sleep(0.05)
    assert states == [("pending", "scheduling"), ("pending", "spawning"), ("running", None)]
    running = drv.ex_get_node_details(node.id)
    assert running.extra["config_drive"] == "True" and running.extra["metadata"] == RECORDED_META
    [address] = running.extra["addresses"]["flatnet"]
    # libcloud files 127.0.0.0/8 under public_ips (its private list has no loopback); the recorded
    # 10.99.0.200 was under private_ips: read the address from extra["addresses"] or either list
    assert running.public_ips + running.private_ips == [address["addr"]]
    assert address["addr"].startswith("127.0.0.") and address["addr"] != "127.0.0.1"
    assert [n.name for n in drv.list_nodes()] == ["rec-alice"]

    assert drv.destroy_node(running) is True
    after = [node_state(drv.ex_get_node_details(node.id))]
    while after[-1] is not None:
        current = node_state(drv.ex_get_node_details(node.id))
        if current != after[-1]:
            after.append(current)
        assert len(after) < 5
        time.sleep(0.05)
    assert after == [("running", "deleting"), None]
    assert drv.list_nodes() == []


def test_unknown_server_is_none(recorded: DoubleHandle) -> None:
    assert driver(recorded).ex_get_node_details("00000000-0000-0000-0000-000000000000") is None


@pytest.mark.parametrize(
    ("purpose", "flavor", "image", "message"),
    [
        ("non-existent flavor", "no-such-flavor", "debian-12-jupyter-grubfix", None),
        ("too-small flavor m1.tiny", "m1.tiny", "debian-12-jupyter-grubfix", None),
        ("non-existent image", "m1.jupyter", "no-such-image", None),
        ("1 TB RAM flavor", "e2e.quota", "debian-12-jupyter-grubfix", None),
    ],
)
def test_create_errors_as_recorded(
    recorded: DoubleHandle, purpose: str, flavor: str, image: str, message: str | None
) -> None:
    from libcloud.compute.base import NodeImage, NodeSize

    drv = driver(recorded)
    sizes = {s.name: s for s in drv.list_sizes()}
    images = {i.name: i for i in drv.list_images()}
    size = sizes.get(flavor) or NodeSize(flavor, flavor, 0, 0, 0, 0, drv)
    img = images.get(image) or NodeImage("ffffffff-0000-0000-0000-000000000000", image, drv)
    expected = recorded_result("default-driver", "create_node", purpose)["exception"]
    with pytest.raises(BaseHTTPError) as err:
        drv.create_node(
            name="rec-err",
            size=size,
            image=img,
            networks=drv.ex_list_networks(),
            ex_userdata=USER_DATA,
            ex_config_drive=True,
            ex_metadata=RECORDED_META,
        )
    assert type(err.value).__module__ + "." + type(err.value).__name__ == expected["type"]
    assert str(err.value) == expected["str"]
    assert recorded.client.servers() == []


@pytest.mark.parametrize(
    ("purpose", "flavor", "states", "fault_in_list"),
    [
        (
            "API accepts, compute rejects",
            "m1.small",
            [("pending", "scheduling"), ("pending", "spawning"), ("error", None)],
            True,
        ),
        ("no host fits", "e2e.novalidhost", [("pending", "scheduling"), ("error", None)], False),
    ],
)
def test_build_errors_after_202_as_recorded(
    recorded: DoubleHandle, purpose: str, flavor: str, states: list[Any], fault_in_list: bool
) -> None:
    drv = driver(recorded)
    node = drv.create_node(
        name="rec-x",
        size=by_name(drv.list_sizes(), flavor),
        image=by_name(drv.list_images(), "debian-12-jupyter-grubfix"),
        networks=drv.ex_list_networks(),
        ex_userdata=USER_DATA,
        ex_config_drive=True,
    )
    assert states_until_error(drv, node) == states
    errored = drv.ex_get_node_details(node.id)
    calls = recorded_calls("default-driver")
    expected = next(
        c
        for c in calls
        if c["call"] == "ex_get_node_details"
        and c["result"]
        and c["result"]["state"] == "error"
        and c["result"]["extra"]["flavorId"] == errored.extra["flavorId"]
    )
    want = expected["result"]["extra"]["fault"]["message"].replace(expected["result"]["id"], node.id)
    assert errored.extra["fault"]["message"] == want
    assert errored.extra["fault"]["code"] == 500
    [listed] = drv.list_nodes()
    assert listed.state == "error"
    assert (listed.extra["fault"] is not None) is fault_in_list
    assert drv.destroy_node(listed)
    wait_until(lambda: drv.ex_get_node_details(node.id) is None, timeout_s=15, interval_s=0.05, what="node gone")


def test_user_data_over_64k_is_refused(default: DoubleHandle) -> None:
    drv = driver(default)
    with pytest.raises(BaseHTTPError) as err:
        drv.create_node(
            name="big",
            size=by_name(drv.list_sizes(), "m1.small"),
            image=by_name(drv.list_images(), "debian-12-jupyter"),
            networks=drv.ex_list_networks(),
            ex_userdata="#cloud-config\n" + "x" * 50000,
        )
    assert err.value.code == 400 and "is too long" in str(err.value)


def test_name_filter_is_a_regex_and_metadata_is_listed(default: DoubleHandle) -> None:
    drv = driver(default)
    size, image, nets = by_name(drv.list_sizes(), "m1.small"), by_name(drv.list_images(), "debian-12-base"), None
    for name in ("jupyter-alice", "jupyter-alice-gpu", "jupyter-bob"):
        drv.create_node(name=name, size=size, image=image, networks=nets, ex_metadata={"user": name})
    headers = {"X-Auth-Token": keystone_token(default)}

    def names(pattern: str) -> list[str]:
        resp = requests.get(f"{default.url}/v2.1/servers/detail", params={"name": pattern}, headers=headers, timeout=10)
        return sorted(s["name"] for s in resp.json()["servers"])

    assert names("jupyter-alice") == ["jupyter-alice", "jupyter-alice-gpu"]  # a search, like Nova's
    assert names("^jupyter-alice$") == ["jupyter-alice"]
    assert names("bob") == ["jupyter-bob"]
    listed = {n.name: n.extra["metadata"] for n in drv.list_nodes()}
    assert listed["jupyter-bob"] == {"user": "jupyter-bob"}


# ---------------------------------------------------------------------------------------- identity


def test_bad_password_is_invalid_creds(default: DoubleHandle) -> None:
    with pytest.raises(InvalidCredsError):
        driver(default, key="wrong").list_sizes()
    resp = requests.post(
        f"{default.url}/v3/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": "jupyter", "domain": {"id": "default"}, "password": "nope"}},
                }
            }
        },
        timeout=10,
    )
    assert resp.status_code == 401
    assert resp.json() == {
        "error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}
    }


def test_application_credential_by_id_through_libcloud(default: DoubleHandle) -> None:
    cred = default.client.catalogue()["identity"]["application_credentials"][0]
    drv = driver(default, user=cred["id"], key=cred["secret"], ex_force_auth_version="3.x_appcred")
    assert [s.name for s in drv.list_sizes()] == ["m1.tiny", "m1.small", "m1.medium"]


@pytest.mark.parametrize(
    ("credential", "status"),
    [
        (
            {
                "name": "jupyterhub",
                "user": {"name": "jupyter", "domain": {"name": "Default"}},
                "secret": "appcred-secret",
            },
            201,
        ),
        ({"name": "jupyterhub", "user": {"id": "5d39fa54e3c84f78b288a02fc83ea899"}, "secret": "appcred-secret"}, 201),
        ({"id": "a5e0c8f3b2d44f1e9c7a6b5d4e3f2a10", "secret": "wrong"}, 401),
        (
            {
                "name": "jupyterhub",
                "user": {"name": "someone", "domain": {"name": "Default"}},
                "secret": "appcred-secret",
            },
            401,
        ),
    ],
)
def test_application_credential_forms(default: DoubleHandle, credential: dict[str, Any], status: int) -> None:
    body = {"auth": {"identity": {"methods": ["application_credential"], "application_credential": credential}}}
    resp = requests.post(f"{default.url}/v3/auth/tokens", json=body, timeout=10)
    assert resp.status_code == status
    if status == 201:
        assert resp.headers["X-Subject-Token"] and resp.json()["token"]["catalog"]
