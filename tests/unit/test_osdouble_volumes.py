"""The double's Cinder v3 and Nova volume attachments against the REAL libcloud OpenStack driver, compared
with the exchanges recorded on the dev cloud (``testkit/osdouble/recordings/cinder/``).

libcloud's ``OpenStack_2_NodeDriver`` (``api_version="2.0"``) talks to Cinder v3 for volumes and to Nova's
``os-volume_attachments`` for attach/detach. It looks Cinder up in the catalog by type ``volumev3`` *and*
name ``cinderv3``; the dev cloud (like the double) names the service ``cinder``, so the stock lookup fails
and the volume connection must be found by type only (:func:`cinder_driver`). The 1.1 driver uses Nova's
``os-volumes`` proxy, which the recordings do not cover and the double does not serve.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from libcloud.common.exceptions import BaseHTTPError
from libcloud.common.types import LibcloudError
from libcloud.compute.types import StorageVolumeState

from testkit.osdouble.catalogue import load_recording
from testkit.osdouble.fixture import DoubleHandle, by_name, keystone_token
from testkit.osdouble.fixture import libcloud_driver as driver
from testkit.wait import wait_until

REC = "cinder/"
CREATE = REC + "001-POST-v3_PROJECT_volumes-202.json"
GET_CREATING = REC + "002-GET-v3_PROJECT_volumes_ID-200.json"
ATTACH = REC + "004-POST-v2_1_servers_ID_os_volume_attachments-200.json"
GET_IN_USE = REC + "005-GET-v3_PROJECT_volumes_ID-200.json"
LIST_ATTACHMENTS = REC + "006-GET-v2_1_servers_ID_os_volume_attachments-200.json"
ONE_ATTACHMENT = REC + "007-GET-v2_1_servers_ID_os_volume_attachments_ID-200.json"
DETACH = REC + "008-DELETE-v2_1_servers_ID_os_volume_attachments_ID-202.json"
DELETE = REC + "011-DELETE-v3_PROJECT_volumes_ID-202.json"
GONE = REC + "012-GET-v3_PROJECT_volumes_ID-404.json"
UPDATE = REC + "update/001-PUT-v3_PROJECT_volumes_ID-200.json"
UPDATE_DROPS_A_KEY = REC + "update/003-PUT-v3_PROJECT_volumes_ID-200.json"


@pytest.fixture
def cloud(volume_cloud: DoubleHandle) -> DoubleHandle:
    return volume_cloud


def cinder_driver(double: DoubleHandle) -> Any:
    """The 2.0 driver with its Cinder v3 connection found by catalog type only (see the module doc)."""
    drv = driver(double, "2.0")
    drv.volumev3_connection.service_name = None
    drv.volume_connection = drv.volumev3_connection
    return drv


def recorded(name: str) -> Any:
    return load_recording(name)["response"]


def status_of(drv: Any, volume_id: str) -> str:
    return str(drv.ex_get_volume(volume_id).extra["state"])


def wait_status(drv: Any, volume_id: str, wanted: str, seen: list[str] | None = None, timeout_s: float = 20) -> None:
    """Poll through libcloud until the volume is ``wanted``, noting every status seen."""

    def check() -> bool:
        status = status_of(drv, volume_id)
        if seen is not None and (not seen or seen[-1] != status):
            seen.append(status)
        return status == wanted

    wait_until(check, timeout_s=timeout_s, interval_s=0.05, what=f"volume {volume_id} {wanted}")


def active_server(double: DoubleHandle, drv: Any, name: str = "vm") -> Any:
    size = by_name(drv.list_sizes(), "m1.small")
    image = by_name(drv.list_images(), "debian-12-jupyter")
    node = drv.create_node(name=name, size=size, image=image)
    double.client.wait_for_server(node.id, status="ACTIVE", timeout_s=20)
    return node


def available(double: DoubleHandle, name: str) -> tuple[Any, Any]:
    """A driver, and a volume of 1 GiB it created, once available."""
    drv = cinder_driver(double)
    vol = drv.create_volume(1, name)
    wait_status(drv, vol.id, "available")
    return drv, vol


def attached(double: DoubleHandle, name: str) -> tuple[Any, Any, Any]:
    """A driver, a volume and the server it is attached to (in-use)."""
    drv, vol = available(double, name)
    node = active_server(double, drv)
    assert drv.attach_volume(node, drv.ex_get_volume(vol.id)) is True
    wait_status(drv, vol.id, "in-use")
    return drv, vol, node


def raw(double: DoubleHandle, method: str, path: str, body: Any = None) -> requests.Response:
    """A plain REST call (as the recordings were made: no microversion header)."""
    headers = {"X-Auth-Token": keystone_token(double)}
    return requests.request(method, double.url + path, json=body, headers=headers, timeout=10)


def project(double: DoubleHandle) -> str:
    return str(double.client.catalogue()["identity"]["project"]["id"])


# ---------------------------------------------------------------------------------------- catalog


def test_stock_driver_does_not_find_cinder_named_as_on_the_dev_cloud(cloud: DoubleHandle) -> None:
    with pytest.raises(LibcloudError, match="Could not find specified endpoint"):
        driver(cloud, "2.0").list_volumes()


def test_catalog_has_volumev3_at_the_project_url(cloud: DoubleHandle) -> None:
    resp = requests.post(
        cloud.url + "/v3/auth/tokens",
        timeout=10,
        json={
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": "jupyter", "domain": {"name": "Default"}, "password": "secret"}},
                }
            }
        },
    )
    entry = next(s for s in resp.json()["token"]["catalog"] if s["type"] == "volumev3")
    assert (entry["name"], {e["url"] for e in entry["endpoints"]}) == ("cinder", {f"{cloud.url}/v3/{project(cloud)}"})


def test_the_1_1_driver_gets_nova_404_for_os_volumes(cloud: DoubleHandle) -> None:
    with pytest.raises(BaseHTTPError) as err:
        driver(cloud).list_volumes()
    assert err.value.code == 404


# ---------------------------------------------------------------------------------------- shapes


def test_update_renames_and_replaces_the_metadata_as_recorded(cloud: DoubleHandle) -> None:
    drv, vol = available(cloud, "home-old")
    path = f"/v3/{project(cloud)}/volumes/{vol.id}"
    sent = load_recording(UPDATE)["request"]["body"]["json"]
    resp = raw(cloud, "PUT", path, sent)
    want = recorded(UPDATE)
    assert resp.status_code == want["status"]
    assert list(resp.json()["volume"]) == list(want["body"]["json"]["volume"])
    got = resp.json()["volume"]
    assert (got["name"], got["metadata"]) == (sent["volume"]["name"], sent["volume"]["metadata"])
    assert drv.ex_get_volume(vol.id).name == sent["volume"]["name"]
    dropping = load_recording(UPDATE_DROPS_A_KEY)["request"]["body"]["json"]
    resp = raw(cloud, "PUT", path, dropping)
    assert resp.json()["volume"]["metadata"] == recorded(UPDATE_DROPS_A_KEY)["body"]["json"]["volume"]["metadata"]
    assert raw(cloud, "PUT", path, {"volume": {"name": 7}}).status_code == 400
    assert raw(cloud, "PUT", f"/v3/{project(cloud)}/volumes/{uuid.uuid4()}", sent).status_code == 404


def test_create_answer_has_the_recorded_keys_and_headers(cloud: DoubleHandle) -> None:
    resp = raw(
        cloud,
        "POST",
        f"/v3/{project(cloud)}/volumes",
        {"volume": {"size": 1, "name": "home-a", "metadata": {"jupyterhub-user": "e2e"}}},
    )
    want = recorded(CREATE)
    assert resp.status_code == want["status"]
    assert list(resp.json()["volume"]) == list(want["body"]["json"]["volume"])
    assert resp.headers["OpenStack-API-Version"] == want["headers"]["OpenStack-API-Version"]
    got = resp.json()["volume"]
    assert (got["status"], got["volume_type"], got["metadata"]) == (
        "creating",
        "__DEFAULT__",
        {"jupyterhub-user": "e2e"},
    )


def test_volume_views_have_the_recorded_keys_in_every_phase(cloud: DoubleHandle) -> None:
    drv = cinder_driver(cloud)
    vol = drv.create_volume(1, "home-b")
    creating = raw(cloud, "GET", f"/v3/{project(cloud)}/volumes/{vol.id}").json()["volume"]
    assert list(creating) == list(recorded(GET_CREATING)["body"]["json"]["volume"])
    wait_status(drv, vol.id, "available")
    assert drv.attach_volume(active_server(cloud, drv), drv.ex_get_volume(vol.id))
    wait_status(drv, vol.id, "in-use")
    in_use = raw(cloud, "GET", f"/v3/{project(cloud)}/volumes/{vol.id}").json()["volume"]
    want = recorded(GET_IN_USE)["body"]["json"]["volume"]
    assert list(in_use) == list(want)
    assert list(in_use["attachments"][0]) == list(want["attachments"][0])


def test_attachment_answers_have_the_recorded_shapes(cloud: DoubleHandle) -> None:
    drv, vol = available(cloud, "home-c")
    node = active_server(cloud, drv)
    attach = raw(
        cloud, "POST", f"/v2.1/servers/{node.id}/os-volume_attachments", {"volumeAttachment": {"volumeId": vol.id}}
    )
    assert (attach.status_code, attach.json()) == (
        200,
        {"volumeAttachment": {"id": vol.id, "serverId": node.id, "volumeId": vol.id, "device": "/dev/vdb"}},
    )
    assert list(attach.json()["volumeAttachment"]) == list(recorded(ATTACH)["body"]["json"]["volumeAttachment"])
    listed = raw(cloud, "GET", f"/v2.1/servers/{node.id}/os-volume_attachments").json()
    assert [list(a) for a in listed["volumeAttachments"]] == [
        list(a) for a in recorded(LIST_ATTACHMENTS)["body"]["json"]["volumeAttachments"]
    ]
    one = raw(cloud, "GET", f"/v2.1/servers/{node.id}/os-volume_attachments/{vol.id}").json()
    assert one == {"volumeAttachment": listed["volumeAttachments"][0]}
    assert list(one["volumeAttachment"]) == list(recorded(ONE_ATTACHMENT)["body"]["json"]["volumeAttachment"])


# ---------------------------------------------------------------------------------------- lifecycle


def test_lifecycle_through_libcloud_as_recorded(cloud: DoubleHandle) -> None:
    drv = cinder_driver(cloud)
    vol = drv.create_volume(1, "home-d")
    assert (vol.state, vol.extra["state"]) == (StorageVolumeState.CREATING, "creating")
    seen: list[str] = []
    wait_status(drv, vol.id, "available", seen)
    node = active_server(cloud, drv)
    assert drv.attach_volume(node, drv.ex_get_volume(vol.id)) is True
    wait_status(drv, vol.id, "in-use", seen)
    attached = drv.ex_get_volume(vol.id)
    assert [(a["server_id"], a["device"]) for a in attached.extra["attachments"]] == [(node.id, "/dev/vdb")]
    assert drv.ex_get_node_details(node.id).extra["volumes_attached"] == [{"id": vol.id}]
    assert drv.detach_volume(attached, ex_node=node) is True
    wait_status(drv, vol.id, "available", seen)
    assert drv.ex_get_volume(vol.id).extra["attachments"] == []
    assert drv.destroy_volume(drv.ex_get_volume(vol.id)) is True
    seen.append(status_of(drv, vol.id))
    assert seen == ["creating", "available", "attaching", "in-use", "detaching", "available", "deleting"]


def test_deleted_volume_is_cinders_404(cloud: DoubleHandle) -> None:
    drv, vol = available(cloud, "home-e")
    delete = raw(cloud, "DELETE", f"/v3/{project(cloud)}/volumes/{vol.id}")
    assert (delete.status_code, delete.text, delete.headers["Content-Type"]) == (
        202,
        "",
        recorded(DELETE)["headers"]["Content-Type"],
    )
    cloud.client.wait_for_volume(vol.id, "deleted", timeout_s=10)
    gone = raw(cloud, "GET", f"/v3/{project(cloud)}/volumes/{vol.id}")
    want = recorded(GONE)["body"]["json"]
    assert (gone.status_code, gone.json()) == (
        404,
        {
            "itemNotFound": {
                "code": 404,
                "message": want["itemNotFound"]["message"].replace("9ec5c5d7-5eed-4e7f-a6df-5cbb265cdf24", vol.id),
            }
        },
    )
    with pytest.raises(BaseHTTPError) as err:
        drv.ex_get_volume(vol.id)
    assert err.value.code == 404


def test_detach_answers_202_empty(cloud: DoubleHandle) -> None:
    _, vol, node = attached(cloud, "home-f")
    resp = raw(cloud, "DELETE", f"/v2.1/servers/{node.id}/os-volume_attachments/{vol.id}")
    assert (resp.status_code, resp.text) == (recorded(DETACH)["status"], "")


def test_deleting_the_server_detaches_and_keeps_the_volume(cloud: DoubleHandle) -> None:
    drv, vol, node = attached(cloud, "home-g")
    drv.destroy_node(node)
    wait_status(drv, vol.id, "available")
    assert drv.ex_get_volume(vol.id).extra["attachments"] == []


def test_list_filters_and_pages_like_cinder(cloud: DoubleHandle) -> None:
    drv = cinder_driver(cloud)
    base = f"/v3/{project(cloud)}/volumes"
    for i in range(3):
        raw(cloud, "POST", base, {"volume": {"size": 1, "name": f"v{i}", "metadata": {"hub": "h1" if i else "h2"}}})
    assert sorted(v.name for v in drv.list_volumes()) == ["v0", "v1", "v2"]
    filtered = requests.get(
        cloud.url + base + "/detail",
        params={"metadata": "{'hub': 'h1'}", "name": "v2"},
        headers={"X-Auth-Token": keystone_token(cloud)},
        timeout=10,
    ).json()["volumes"]
    assert [v["name"] for v in filtered] == ["v2"]
    pages = drv._paginated_request("/volumes/detail", "volumes", drv.volume_connection, params={"limit": 2})
    assert sorted(v["name"] for v in pages["volumes"]) == ["v0", "v1", "v2"]


# ---------------------------------------------------------------------------------------- refusals


def refusal(call: Any) -> tuple[int, str]:
    with pytest.raises(BaseHTTPError) as err:
        call()
    return err.value.code, str(err.value)


def test_attach_of_a_volume_in_use_elsewhere_is_refused(cloud: DoubleHandle) -> None:
    drv, vol = available(cloud, "home-h")
    first, second = active_server(cloud, drv, "vm-1"), active_server(cloud, drv, "vm-2")
    drv.attach_volume(first, drv.ex_get_volume(vol.id))
    code, text = refusal(lambda: drv.attach_volume(second, drv.ex_get_volume(vol.id)))
    assert (code, "status must be available" in text) == (400, True)


def test_delete_of_an_attached_volume_is_refused(cloud: DoubleHandle) -> None:
    drv, vol, _ = attached(cloud, "home-i")
    code, text = refusal(lambda: drv.destroy_volume(drv.ex_get_volume(vol.id)))
    assert (code, "must not be migrating, attached" in text) == (400, True)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"volume": {"size": 1, "volume_type": "ssd"}}, 404, "Volume type with name ssd could not be found."),
        ({"volume": {"size": 0}}, 400, "Invalid input for field/attribute size."),
        ({"size": 1}, 400, "Missing required element 'volume' in request body."),
        ({"volume": {"size": 1, "metadata": {"k": 1}}}, 400, "Invalid input for field/attribute metadata."),
    ],
)
def test_create_refusals(cloud: DoubleHandle, body: dict[str, Any], status: int, message: str) -> None:
    resp = raw(cloud, "POST", f"/v3/{project(cloud)}/volumes", body)
    fault = "itemNotFound" if status == 404 else "badRequest"
    assert (resp.status_code, resp.json()[fault]["message"].startswith(message)) == (status, True)


def test_volume_quota_is_cinders_413(cloud: DoubleHandle) -> None:
    cloud.client.set_catalogue(quotas={"volumes": 1})
    drv = cinder_driver(cloud)
    drv.create_volume(1, "one")
    code, text = refusal(lambda: drv.create_volume(1, "two"))
    assert (code, "Maximum number of volumes allowed (1) exceeded for quota 'volumes'." in text) == (413, True)


def test_detach_of_a_volume_not_attached_is_404(cloud: DoubleHandle) -> None:
    drv = cinder_driver(cloud)
    vol = drv.create_volume(1, "home-j")
    node = active_server(cloud, drv)
    resp = raw(cloud, "DELETE", f"/v2.1/servers/{node.id}/os-volume_attachments/{vol.id}")
    assert (resp.status_code, resp.json()["itemNotFound"]["message"]) == (
        404,
        f"Instance {node.id} is not attached to volume {vol.id}",
    )


def test_wrong_project_in_the_url_is_refused(cloud: DoubleHandle) -> None:
    resp = raw(cloud, "GET", "/v3/0123456789abcdef0123456789abcdef/volumes/detail")
    assert (resp.status_code, resp.json()["badRequest"]["message"]) == (400, "Malformed request url")


# ---------------------------------------------------------------------------------------- faults


def test_fault_create_ends_in_error(cloud: DoubleHandle) -> None:
    cloud.client.add_fault({"type": "volume", "status": "error"}, method="POST", path=r"/volumes$")
    drv = cinder_driver(cloud)
    vol = drv.create_volume(1, "broken")
    wait_status(drv, vol.id, "error")
    assert drv.ex_get_volume(vol.id).state == StorageVolumeState.ERROR


def test_fault_attach_fails_on_the_host_and_rolls_back(cloud: DoubleHandle) -> None:
    drv, vol = available(cloud, "home-k")
    node = active_server(cloud, drv)
    cloud.client.add_fault({"type": "volume", "status": "available"}, method="POST", path="os-volume_attachments")
    seen: list[str] = []
    assert drv.attach_volume(node, drv.ex_get_volume(vol.id))
    wait_status(drv, vol.id, "available", seen)
    assert (seen[0], drv.ex_get_volume(vol.id).extra["attachments"]) == ("attaching", [])


def test_fault_attach_refused_with_a_nova_500(cloud: DoubleHandle) -> None:
    drv, vol = available(cloud, "home-l")
    node = active_server(cloud, drv)
    cloud.client.add_fault({"type": "status", "status": 500}, method="POST", path="os-volume_attachments")
    code, _ = refusal(lambda: drv.attach_volume(node, drv.ex_get_volume(vol.id)))
    assert (code, status_of(drv, vol.id)) == (500, "available")


def test_fault_slow_detach(cloud: DoubleHandle) -> None:
    drv, vol, node = attached(cloud, "home-m")
    cloud.client.add_fault({"type": "volume", "seconds": 3}, method="DELETE", path="os-volume_attachments")
    drv.detach_volume(drv.ex_get_volume(vol.id), ex_node=node)
    assert status_of(drv, vol.id) == "detaching"
    wait_status(drv, vol.id, "available", timeout_s=15)


def test_control_api_puts_a_volume_in_error(cloud: DoubleHandle) -> None:
    drv = cinder_driver(cloud)
    vol = drv.create_volume(1, "home-n")
    cloud.client.set_volume_status(vol.id, "error")
    assert (status_of(drv, vol.id), cloud.client.volume(vol.id)["status"]) == ("error", "error")


def test_fault_detach_that_fails_keeps_the_volume_attached(cloud: DoubleHandle) -> None:
    drv, vol, node = attached(cloud, "home-o")
    cloud.client.add_fault({"type": "volume", "status": "in-use"}, method="DELETE", path="os-volume_attachments")
    seen: list[str] = []
    drv.detach_volume(drv.ex_get_volume(vol.id), ex_node=node)
    wait_status(drv, vol.id, "in-use", seen)
    assert (seen[0], [a["server_id"] for a in drv.ex_get_volume(vol.id).extra["attachments"]]) == (
        "detaching",
        [node.id],
    )
