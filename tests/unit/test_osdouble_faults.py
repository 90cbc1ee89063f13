"""The double's injectable faults, identity and control API, against the REAL libcloud OpenStack driver."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError

from testkit.osdouble.fixture import (
    DoubleHandle,
    by_name,
    keystone_token,
    running_double,
    states_until_error,
)
from testkit.osdouble.fixture import libcloud_driver as driver
from testkit.wait import wait_until

# ---------------------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("effect", "code", "message_start"),
    [
        ({"type": "status", "status": 500}, 500, "500 Internal Server Error Unexpected API Error."),
        ({"type": "status", "status": 503}, 503, "503 Service Unavailable Service Unavailable"),
        (
            {"type": "status", "status": 409, "message": "Cannot 'delete' instance while it is in task_state spawning"},
            409,
            "409 Conflict Cannot 'delete' instance",
        ),
        ({"type": "rate_limit", "status": 413, "retry_after": 2}, 413, "413 Request Entity Too Large This request was"),
        ({"type": "quota", "resource": "instances"}, 403, "403 Forbidden Quota exceeded for instances: Requested 1"),
    ],
)
def test_status_faults_reach_libcloud_as_nova_errors(
    default: DoubleHandle, effect: dict[str, Any], code: int, message_start: str
) -> None:
    drv = driver(default)
    drv.list_sizes()
    default.client.add_fault(effect, method="GET", path=r"^/v2\.1/servers/detail$", times=1)
    with pytest.raises(BaseHTTPError) as err:
        drv.list_nodes()
    assert err.value.code == code
    assert str(err.value).startswith(message_start)
    assert drv.list_nodes() == []  # times=1: the next call is fine


def test_nova_error_body_and_retry_after(default: DoubleHandle) -> None:
    default.client.add_fault({"type": "rate_limit", "status": 413, "retry_after": 3}, path="/servers/detail")
    resp = requests.get(
        f"{default.url}/v2.1/servers/detail", headers={"X-Auth-Token": keystone_token(default)}, timeout=10
    )
    assert resp.status_code == 413
    assert resp.headers["Retry-After"] == "3"
    assert resp.json() == {"overLimit": {"code": 413, "message": "This request was rate-limited.", "retryAfter": "3"}}
    assert resp.headers["OpenStack-API-Version"] == "compute 2.1"


def test_429_is_libcloud_rate_limit_error(default: DoubleHandle) -> None:
    drv = driver(default)
    default.client.add_fault({"type": "rate_limit", "status": 429, "retry_after": 0}, path="/flavors/detail", nth=1)
    with pytest.raises(RateLimitReachedError):
        drv.list_sizes()


@pytest.mark.parametrize(
    ("service", "path", "check"),
    [
        ("network", "/v2.0/networks", lambda r: r.json()["NeutronError"]["type"] == "HTTPInternalServerError"),
        ("image", "/v2/images", lambda r: "<title>500 Internal Server Error</title>" in r.text),
        ("identity", "/v3/auth/tokens", lambda r: r.json()["error"]["code"] == 500),
    ],
)
def test_error_bodies_per_service(
    default: DoubleHandle, service: str, path: str, check: Callable[[requests.Response], bool]
) -> None:
    tok = keystone_token(default)
    default.client.add_fault({"type": "status", "status": 500}, service=service)
    method = "POST" if service == "identity" else "GET"
    resp = requests.request(method, default.url + path, headers={"X-Auth-Token": tok}, json={}, timeout=10)
    assert resp.status_code == 500 and check(resp)


def test_nth_times_and_probability(default: DoubleHandle) -> None:
    c = default.client
    headers = {"X-Auth-Token": keystone_token(default)}
    nth = c.add_fault({"type": "status", "status": 500}, path="/flavors/detail", nth=2)
    statuses = [
        requests.get(f"{default.url}/v2.1/flavors/detail", headers=headers, timeout=10).status_code for _ in range(4)
    ]
    assert statuses == [200, 500, 200, 200]
    assert c.fault(nth["id"])["hits"] == 1
    c.clear_faults()
    c.add_fault({"type": "status", "status": 503}, path="/os-networks", after=1, times=2)
    statuses = [
        requests.get(f"{default.url}/v2.1/os-networks", headers=headers, timeout=10).status_code for _ in range(5)
    ]
    assert statuses == [200, 503, 503, 200, 200]
    c.clear_faults()

    def run(seed: int) -> list[int]:
        c.clear_faults()
        c.add_fault({"type": "status", "status": 500}, path="/v2/images", probability=0.5, seed=seed)
        return [requests.get(f"{default.url}/v2/images", headers=headers, timeout=10).status_code for _ in range(20)]

    first, again = run(7), run(7)
    assert first == again and 500 in first and 200 in first


def test_delay_beyond_client_timeout(default: DoubleHandle) -> None:
    drv = driver(default, timeout=1)
    drv.list_sizes()
    default.client.add_fault({"type": "delay", "seconds": 6}, path="/servers/detail", nth=1)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.Timeout):
        drv.list_nodes()
    assert time.monotonic() - started < 5  # the client gave up before the double answered
    assert drv.list_nodes() == []


def test_global_latency_keeps_concurrency(default: DoubleHandle) -> None:
    import concurrent.futures

    default.client.set_latency(0.5)
    headers = {"X-Auth-Token": keystone_token(default)}
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(
                lambda _: requests.get(f"{default.url}/v2.1/flavors/detail", headers=headers, timeout=10).status_code,
                range(8),
            )
        )
    elapsed = time.monotonic() - started
    assert statuses == [200] * 8
    assert 0.5 <= elapsed < 3.0  # 8 calls of 0.5 s each: 4 s if served one after the other


@pytest.mark.parametrize("effect", ["reset", "drop"])
def test_connection_reset_or_drop(default: DoubleHandle, effect: str) -> None:
    drv = driver(default)
    drv.list_sizes()
    default.client.add_fault(effect, path="/servers/detail", nth=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        drv.list_nodes()
    assert drv.list_nodes() == []
    [call] = [c for c in default.client.calls() if c["route"] == "/v2.1/servers/detail" and c["effect"]]
    assert call["status"] == 0


def test_create_succeeded_but_response_lost(default: DoubleHandle) -> None:
    drv = driver(default)
    size, image = by_name(drv.list_sizes(), "m1.small"), by_name(drv.list_images(), "debian-12-base")
    default.client.add_fault("lost_response", method="POST", path=r"^/v2\.1/servers$", nth=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        drv.create_node(name="jupyter-lost", size=size, image=image, ex_metadata={"hub": "h1"})
    [server] = default.client.servers()
    assert server["name"] == "jupyter-lost"
    found = wait_until(
        lambda: [n for n in drv.list_nodes() if n.name == "jupyter-lost"],
        timeout_s=15,
        interval_s=0.05,
        what="the lost node listed",
    )
    assert found[0].extra["metadata"] == {"hub": "h1"}


@pytest.mark.parametrize(
    ("fault", "message_part", "states"),
    [
        ("novalidhost", "No valid host was found. ", [("pending", "scheduling"), ("error", None)]),
        (
            "disk",
            "Flavor's disk is too small for requested image",
            [("pending", "scheduling"), ("pending", "spawning"), ("error", None)],
        ),
        (
            {"code": 500, "message": "Exceeded maximum number of retries."},
            "Exceeded maximum number of retries.",
            [("pending", "scheduling"), ("pending", "spawning"), ("error", None)],
        ),
    ],
)
def test_instance_goes_to_error(default: DoubleHandle, fault: Any, message_part: str, states: list[Any]) -> None:
    drv = driver(default)
    default.client.add_fault({"type": "build_error", "fault": fault}, method="POST", path=r"^/v2\.1/servers$")
    node = drv.create_node(
        name="doomed", size=by_name(drv.list_sizes(), "m1.small"), image=by_name(drv.list_images(), "debian-12-jupyter")
    )
    assert states_until_error(drv, node) == states
    assert message_part in drv.ex_get_node_details(node.id).extra["fault"]["message"]


def test_force_error_on_a_running_instance(default: DoubleHandle) -> None:
    drv = driver(default)
    node = drv.create_node(
        name="later-error",
        size=by_name(drv.list_sizes(), "m1.small"),
        image=by_name(drv.list_images(), "debian-12-base"),
    )
    default.client.wait_for_server(node.id, status="ACTIVE")
    default.client.force_error(node.id, message="Host failed")
    details = drv.ex_get_node_details(node.id)
    assert (details.state, details.extra["fault"]["message"]) == ("error", "Host failed")


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (500, "500 Internal Server Error Unexpected API Error."),
        (404, "404 Not Found Instance {id} could not be found."),
    ],
)
def test_delete_that_fails(default: DoubleHandle, status: int, message: str) -> None:
    drv = driver(default)
    node = drv.create_node(
        name="stubborn", size=by_name(drv.list_sizes(), "m1.small"), image=by_name(drv.list_images(), "debian-12-base")
    )
    default.client.add_fault({"type": "status", "status": status}, method="DELETE", nth=1)
    with pytest.raises(BaseHTTPError) as err:
        drv.destroy_node(node)
    assert str(err.value).startswith(message.format(id=node.id))
    assert drv.ex_get_node_details(node.id) is not None  # still there
    assert drv.destroy_node(node)
    wait_until(lambda: drv.ex_get_node_details(node.id) is None, timeout_s=15, interval_s=0.05, what="node gone")


def test_unauthorized_fault_revokes_the_token_and_libcloud_reauthenticates(default: DoubleHandle) -> None:
    drv = driver(default)
    drv.list_sizes()
    auths = default.client.call_counts()["by_route"]["POST /v3/auth/tokens"]
    default.client.add_fault("unauthorized", path="/servers/detail", nth=1)
    with pytest.raises(BaseHTTPError) as err:
        drv.list_nodes()
    assert err.value.code == 401
    assert drv.list_nodes() == []
    assert default.client.call_counts()["by_route"]["POST /v3/auth/tokens"] == auths + 1


def test_expire_tokens_on_demand(default: DoubleHandle) -> None:
    drv = driver(default)
    drv.list_sizes()
    assert default.client.expire_tokens() >= 1
    with pytest.raises(BaseHTTPError) as err:
        drv.list_sizes()
    assert err.value.code == 401
    assert [s.name for s in drv.list_sizes()] == ["m1.tiny", "m1.small", "m1.medium"]


def test_token_revoked_before_its_expiry(default: DoubleHandle) -> None:
    default.client.set_config(token_revoke_after_s=2.0)
    drv = driver(default)
    drv.list_sizes()
    time.sleep(2.5)
    with pytest.raises(BaseHTTPError) as err:
        drv.list_sizes()
    assert err.value.code == 401


def test_short_token_ttl_makes_libcloud_reauthenticate(default: DoubleHandle) -> None:
    default.client.set_config(token_ttl_s=9)  # libcloud renews 5 s before expires_at
    drv = driver(default)
    drv.list_sizes()
    auths = default.client.call_counts()["by_route"]["POST /v3/auth/tokens"]
    time.sleep(4.5)
    drv.list_sizes()
    assert default.client.call_counts()["by_route"]["POST /v3/auth/tokens"] == auths + 1
    assert all(c["status"] != 401 for c in default.client.calls())


def refused(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) != 0


def test_api_stop_and_start(default: DoubleHandle) -> None:
    drv = driver(default)
    drv.list_sizes()
    default.client.stop_api()
    assert refused(default.url)
    with pytest.raises(requests.exceptions.ConnectionError):
        drv.list_nodes()
    default.client.start_api()
    assert drv.list_nodes() == []


def test_api_down_effect_restarts_by_itself(default: DoubleHandle) -> None:
    drv = driver(default)
    drv.list_sizes()
    default.client.add_fault({"type": "api_down", "seconds": 1.0}, path="/servers/detail", nth=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        drv.list_nodes()
    wait_until(lambda: refused(default.url), timeout_s=5, interval_s=0.05, what="API refusing")
    wait_until(lambda: not refused(default.url), timeout_s=10, interval_s=0.05, what="API back")
    assert drv.list_nodes() == []


def test_calls_are_recorded_with_counters(default: DoubleHandle) -> None:
    drv = driver(default)
    drv.list_sizes()
    drv.ex_get_node_details("00000000-0000-0000-0000-000000000000")
    calls = default.client.calls()
    assert [(c["method"], c["route"], c["status"]) for c in calls] == [
        ("POST", "/v3/auth/tokens", 201),
        ("GET", "/v2.1/flavors/detail", 200),
        ("GET", "/v2.1/servers/{id}", 404),
    ]
    assert all(c["t"] > 0 and c["service"] for c in calls)
    counts = default.client.call_counts()
    assert counts["total"] == 3 and counts["by_status"]["GET /v2.1/servers/{id} 404"] == 1


def test_catalogue_can_be_replaced(default: DoubleHandle) -> None:
    default.client.set_catalogue(
        flavors=[{"name": "g1.gpu", "vcpus": 8, "ram": 16384, "disk": 50}],
        images=[{"name": "ubuntu-22.04", "size": 1 << 30, "virtual_size": 4 << 30}],
        networks=[{"name": "tenantnet"}],
    )
    drv = driver(default)
    assert [(s.name, s.vcpus, s.ram, s.disk) for s in drv.list_sizes()] == [("g1.gpu", 8, 16384, 50)]
    assert [i.name for i in drv.list_images()] == ["ubuntu-22.04"]
    assert [n.name for n in drv.ex_list_networks()] == ["tenantnet"]


def test_quota_from_usage(default: DoubleHandle) -> None:
    default.client.set_catalogue(quotas={"instances": 1})
    drv = driver(default)
    size, image = by_name(drv.list_sizes(), "m1.small"), by_name(drv.list_images(), "debian-12-base")
    drv.create_node(name="one", size=size, image=image)
    with pytest.raises(BaseHTTPError) as err:
        drv.create_node(name="two", size=size, image=image)
    assert str(err.value) == (
        "403 Forbidden Quota exceeded for instances: Requested 1, but already used 1 of 1 instances"
    )


def test_reset_deletes_everything(default: DoubleHandle) -> None:
    drv = driver(default)
    drv.create_node(
        name="x", size=by_name(drv.list_sizes(), "m1.small"), image=by_name(drv.list_images(), "debian-12-base")
    )
    default.client.add_fault("reset", path="/nothing")
    default.client.reset()
    assert default.client.servers() == [] and default.client.faults() == [] and default.client.calls() == []


def test_user_data_round_trip(default: DoubleHandle) -> None:
    drv = driver(default)
    text = "#cloud-config\n# héllo\n"
    node = drv.create_node(
        name="ud",
        size=by_name(drv.list_sizes(), "m1.small"),
        image=by_name(drv.list_images(), "debian-12-base"),
        ex_userdata=text,
    )
    assert default.client.user_data(node.id) == text
    assert base64.b64decode(base64.b64encode(text.encode())).decode() == text


def test_keystone_version_discovery(default: DoubleHandle) -> None:
    root = requests.get(default.url + "/", timeout=10)
    v3 = requests.get(default.url + "/v3", timeout=10)
    assert root.status_code == 300 and root.json()["versions"]["values"][0]["id"] == "v3.14"
    assert v3.status_code == 200 and v3.json()["version"]["links"][0]["href"] == default.url + "/v3/"


def test_concurrent_creates_with_latency_stay_concurrent(default: DoubleHandle) -> None:
    import concurrent.futures

    default.client.set_config(latency_s=0.5, no_run=True)
    tok = keystone_token(default)
    flavor = next(f["id"] for f in default.client.catalogue()["flavors"] if f["name"] == "m1.small")
    image = next(i["id"] for i in default.client.catalogue()["images"] if i["name"] == "debian-12-base")

    def create(i: int) -> int:
        body = {"server": {"name": f"load-{i}", "flavorRef": flavor, "imageRef": image}}
        return requests.post(
            f"{default.url}/v2.1/servers", json=body, headers={"X-Auth-Token": tok}, timeout=30
        ).status_code

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(create, range(50)))
    assert statuses == [202] * 50
    assert time.monotonic() - started < 12  # 50 creates of 0.5 s each: 25 s if served one after the other
    servers = [default.client.wait_for_server(name=f"load-{i}", status="ACTIVE", timeout_s=30) for i in range(50)]
    assert len({s["address"] for s in servers}) == 50


def test_first_firing_rule_wins_and_others_still_count(default: DoubleHandle) -> None:
    headers = {"X-Auth-Token": keystone_token(default)}
    first = default.client.add_fault({"type": "status", "status": 500}, path="/flavors/detail", nth=1)
    second = default.client.add_fault({"type": "status", "status": 503}, path="/flavors/detail", nth=2)
    statuses = [
        requests.get(f"{default.url}/v2.1/flavors/detail", headers=headers, timeout=10).status_code for _ in range(3)
    ]
    assert statuses == [500, 503, 200]
    assert [
        (r["matches"], r["hits"]) for r in (default.client.fault(first["id"]), default.client.fault(second["id"]))
    ] == [(3, 1), (3, 1)]


def test_token_validation_endpoint(default: DoubleHandle) -> None:
    tok = keystone_token(default)
    ok = requests.get(
        f"{default.url}/v3/auth/tokens", headers={"X-Auth-Token": tok, "X-Subject-Token": tok}, timeout=10
    )
    assert ok.status_code == 200 and ok.headers["X-Subject-Token"] == tok
    default.client.expire_tokens()
    assert (
        requests.get(
            f"{default.url}/v3/auth/tokens", headers={"X-Auth-Token": tok, "X-Subject-Token": tok}, timeout=10
        ).status_code
        == 401
    )


def test_glance_pagination_is_followed_by_libcloud(default: DoubleHandle) -> None:
    default.client.set_catalogue(images=[{"name": f"img-{i:02d}"} for i in range(30)])
    assert [i.name for i in driver(default, "2.0").list_images()] == [f"img-{i:02d}" for i in range(30)]
    tok = keystone_token(default)
    first = requests.get(f"{default.url}/v2/images", headers={"X-Auth-Token": tok}, timeout=10).json()
    assert len(first["images"]) == 25 and first["next"].startswith("/v2/images?marker=")


def test_server_metadata_calls(default: DoubleHandle) -> None:
    drv = driver(default)
    node = drv.create_node(
        name="meta",
        size=by_name(drv.list_sizes(), "m1.small"),
        image=by_name(drv.list_images(), "debian-12-base"),
        ex_metadata={"a": "1"},
    )
    assert drv.ex_get_metadata(node) == {"a": "1"}
    drv.ex_set_metadata(node, {"b": "2"})
    assert drv.ex_get_node_details(node.id).extra["metadata"] == {"b": "2"}


def test_catalogue_from_a_json_file(tmp_path: Path) -> None:
    import json

    spec = tmp_path / "cat.json"
    spec.write_text(
        json.dumps({"preset": "recorded", "flavors": [{"name": "only.one", "ram": 1024}], "quotas": {"instances": 2}})
    )
    with running_double(tmp_path, catalogue=str(spec)) as handle:
        cat = handle.client.catalogue()
        assert [f["name"] for f in cat["flavors"]] == ["only.one"]
        assert cat["quotas"] == {"instances": 2, "cores": 20, "ram": 51200, "volumes": 20, "gigabytes": 32}
        assert "debian-12-jupyter-grubfix" in [i["name"] for i in cat["images"]]
