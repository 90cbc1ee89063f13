"""The spawner in a real JupyterHub: forms, validation, spawn, progress, proxy, stop, named servers, reattach."""

from __future__ import annotations

import concurrent.futures
import re

import pytest

from testkit.hub import PASSWORD, _xsrf, cloud_servers, original_config, running_hub, spawn_ready
from testkit.wait import wait_until

pytestmark = pytest.mark.hub

CREATE_ROUTE = "POST /v2.1/servers"


@pytest.fixture(scope="module")
def hub(tmp_path_factory, double):
    with running_hub(tmp_path_factory.mktemp("hub"), double, original_config(double.url)) as h:
        yield h


def api_calls(double) -> int:
    return double.client.call_counts()["total"]


def creates(double) -> int:
    return double.client.call_counts()["by_route"].get(CREATE_ROUTE, 0)


def test_form_lists_the_configured_choices(hub):
    session = hub.login("formviewer")
    page = session.get(f"{hub.url}/hub/spawn", timeout=10)
    assert page.status_code == 200
    options = dict(re.findall(r'<option value="([^"]+)"[^>]*>([^<]+)</option>', page.text))
    assert options == {
        "m1.small": "1vcpu 2Go RAM",
        "m1.medium": "2vcpu 4Go RAM",
        "debian-12-jupyter": "Default image",
        "debian-12-base": "Base image",
    }
    assert 'class="form-select"' in page.text


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"size": "m1.huge", "image": "debian-12-jupyter"}, "Unknown size"),
        ({"size": "m1.small", "image": "ubuntu"}, "Unknown image"),
        ({"size": "m1.small", "flavor": "x"}, "Unknown option"),
    ],
)
def test_form_refuses_what_was_not_offered(hub, double, form, message):
    session = hub.login("formhacker")
    xsrf = _xsrf(session.get(f"{hub.url}/hub/spawn", timeout=10).text)
    before = api_calls(double)
    r = session.post(f"{hub.url}/hub/spawn", data={**form, "_xsrf": xsrf}, timeout=30, allow_redirects=False)
    assert r.status_code == 400
    assert message in r.text
    assert api_calls(double) == before


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size": "m1.huge"}, "Unknown size"),
        ({"image": "debian-12-base; reboot"}, "Unknown image"),
        ({"size": ["m1.small"]}, "must be a string"),
        ({"size": {"$ne": 1}}, "must be a string"),
        ({"size": 3}, "must be a string"),
        ({"size": "m" * 100000}, "too long"),
        ({"size": "m1.small", "userserver_net": "admin-net"}, "Unknown option"),
        ({"profile": "gpu"}, "Unknown option"),
    ],
)
def test_rest_refuses_forged_options_with_400_and_no_cloud_call(hub, double, options, message):
    hub.create_user("forger")
    before = api_calls(double)
    r = hub.api("POST", "/users/forger/server", json=options)
    assert r.status_code == 400, r.text
    assert message in r.json()["message"]
    assert api_calls(double) == before
    assert hub.spawner_model("forger") is None


def test_spawn_progress_proxy_and_stop(hub, double):
    hub.create_user("alice")
    double.client.set_config(boot_delay_s=3)  # time to open the event stream while the spawn is pending
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            post = pool.submit(
                hub.api, "POST", "/users/alice/server", json={"size": "m1.medium", "image": "debian-12-jupyter"}
            )
            wait_until(
                lambda: (hub.spawner_model("alice") or {}).get("pending") == "spawn",
                timeout_s=30,
                interval_s=0.05,
                what="alice's spawn pending",
            )
            events = hub.progress("alice")
            r = post.result(timeout=60)
    finally:
        double.client.set_config(boot_delay_s=0)
    assert r.status_code in (201, 202), r.text
    assert events[-1].get("ready"), events
    percentages = [e["progress"] for e in events if "progress" in e]
    assert percentages == sorted(percentages)
    messages = " | ".join(e.get("message", "") for e in events)
    for phase in ("Looking up image", "Creating virtual machine jupyter-alice", "waiting for Jupyter"):
        assert phase in messages
    hub.wait_ready("alice")

    [server] = cloud_servers(double, user="alice")
    assert server["name"] == "jupyter-alice"
    assert server["flavor"] == "m1.medium"
    metadata = dict(server["metadata"])
    assert re.fullmatch(r"[0-9a-f]{16}", metadata.pop("jupyterhub-spawn-id"))  # this start's own token
    assert metadata == {
        "jupyterhub-hub-id": "hubtier",
        "jupyterhub-user": "alice",
        "jupyterhub-server-name": "",
        "jupyterhub-managed-by": "libcloudspawner",
    }
    boot = double.client.boot_report(server["id"])
    assert boot["units"][0]["user"] == "alice" and boot["units"][0]["runnable"]

    r = hub.through_proxy("alice")
    assert r.status_code == 200, r.text
    assert "version" in r.json()

    r = hub.api("DELETE", "/users/alice/server")
    assert r.status_code in (202, 204), r.text
    hub.wait_gone("alice")
    wait_until(lambda: not cloud_servers(double, user="alice"), timeout_s=30, what="alice's instance deleted")


def test_spawn_through_the_form(hub, double):
    session = hub.login("formuser")
    xsrf = _xsrf(session.get(f"{hub.url}/hub/spawn", timeout=10).text)
    r = session.post(
        f"{hub.url}/hub/spawn",
        data={"size": "m1.small", "image": "debian-12-jupyter", "_xsrf": xsrf},
        timeout=30,
        allow_redirects=False,
    )
    assert r.status_code == 302, r.text[:500]
    hub.wait_ready("formuser")
    [server] = cloud_servers(double, user="formuser")
    assert server["flavor"] == "m1.small"
    assert hub.api("DELETE", "/users/formuser/server").status_code in (202, 204)
    hub.wait_gone("formuser")
    assert not cloud_servers(double, user="formuser")


def test_named_server(hub, double):
    hub.create_user("bob")
    r = hub.api("POST", "/users/bob/servers/gpu", json={"size": "m1.small"})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("bob", "gpu")
    [server] = cloud_servers(double, user="bob")
    assert server["name"] == "jupyter-bob--gpu"
    assert server["metadata"]["jupyterhub-server-name"] == "gpu"
    assert hub.through_proxy("bob", "gpu").status_code == 200
    assert hub.api("DELETE", "/users/bob/servers/gpu").status_code in (202, 204)
    hub.wait_gone("bob", "gpu")
    wait_until(lambda: not cloud_servers(double, user="bob"), timeout_s=30, what="bob's instance deleted")


def test_hub_restart_reattaches(hub, double):
    server = spawn_ready(hub, double, "carol")
    created = creates(double)

    hub.restart()

    hub.wait_ready("carol")
    assert hub.through_proxy("carol").status_code == 200
    assert creates(double) == created
    assert [s["id"] for s in cloud_servers(double, user="carol")] == [server["id"]]
    assert hub.api("DELETE", "/users/carol/server").status_code in (202, 204)
    hub.wait_gone("carol")
    assert not cloud_servers(double, user="carol")


def test_no_secret_in_the_debug_log(hub, double):
    hub.create_user("dave")
    assert hub.api("POST", "/users/dave/server", json={}).status_code in (201, 202)
    hub.wait_ready("dave")
    [server] = cloud_servers(double, user="dave")
    user_data = double.client.user_data(server["id"])
    token = re.search(r'JUPYTERHUB_API_TOKEN=\\"([^"\\]+)\\"', user_data)
    assert token, "the rendered user-data carries the server's API token"
    log = hub.log_text()
    assert "[D " in log  # the check means something only at DEBUG level
    assert token.group(1) not in log
    assert PASSWORD not in log
    assert "#cloud-config" not in log
    assert hub.api("DELETE", "/users/dave/server").status_code in (202, 204)
    hub.wait_gone("dave")
