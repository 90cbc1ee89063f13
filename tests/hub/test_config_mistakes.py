"""The administrator's mistakes in a real JupyterHub: named with their fix, never a bare 500 to the user.

A wrong setting is kept out when the spawner is built: the user is told to report it (with JupyterHub's status),
the hub's log says what to fix, and nothing is booted. With ``stop_unless_valid(c)`` at the end of the
configuration file the hub does not start at all. A key pair or security group the cloud lacks is found before
the create and is the administrator's problem, not "the cloud refused".
"""

from __future__ import annotations

import subprocess

import pytest

from testkit.hub import Hub, original_config, running_hub

# several mistakes at once: each is named in the log; the other settings still load
MISTAKES = {
    "instance_name_template": "jupyter-{user}",
    "openstack_api_version": "3.0",
    "instance_metadata": {"jupyterhub-user": "x"},
    "image_manifest": "/nonexistent/manifest.json",
}
TELL = "please tell the administrator"


def creates(double) -> int:
    return double.client.call_counts()["by_route"].get("POST /v2.1/servers", 0)


@pytest.fixture(scope="module")
def misconfigured(tmp_path_factory, double):
    with running_hub(tmp_path_factory.mktemp("hub"), double, {**original_config(double.url), **MISTAKES}) as h:
        h.create_user("cfg-rest")
        before = creates(double)
        h.first_spawn = h.api("POST", "/users/cfg-rest/server", json={})  # builds the spawner: logs the problems
        h.first_spawn_creates = creates(double) - before
        yield h


def test_a_rest_spawn_is_refused_with_a_message_to_report(misconfigured):
    assert misconfigured.first_spawn.status_code == 500
    assert TELL in misconfigured.first_spawn.json()["message"]
    assert misconfigured.first_spawn_creates == 0


def test_the_spawn_page_says_to_report_it(misconfigured):
    session = misconfigured.login("cfg-page")
    page = session.get(f"{misconfigured.url}/hub/spawn", timeout=30)
    assert page.status_code == 500
    assert TELL in page.text


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_the_log_names_each_setting_and_value(misconfigured, name):
    log = misconfigured.log_text()
    assert f"{name} = {MISTAKES[name]!r}" in log
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [("userserver_keyname", "nosuchkey", "key pair 'nosuchkey'"),
     ("security_groups", ["nosuchgroup"], "security group 'nosuchgroup'")],
)  # fmt: skip
def test_an_unknown_key_pair_or_security_group_is_the_administrators(tmp_path, double, setting, value, named):
    with running_hub(tmp_path, double, {**original_config(double.url), setting: value}) as hub:
        hub.create_user("cfg-cloud")
        before = creates(double)
        hub.api("POST", "/users/cfg-cloud/server", json={})
        model = hub.progress("cfg-cloud")[-1]
        assert model["failed"] and f"The cloud has no {named}; {TELL}." in model["message"]
        assert "refused" not in model["message"]
        assert creates(double) == before


def test_stop_unless_valid_keeps_the_hub_from_starting(tmp_path, double):
    extra = "from libcloudspawner.check import stop_unless_valid\nstop_unless_valid(c)\n"
    hub = Hub(tmp_path, double, {**original_config(double.url), "instance_name_template": "jupyter-{user}"}, extra)
    with pytest.raises(AssertionError, match="jupyterhub exited with 1"):
        hub.start(timeout_s=60)
    log = hub.log_text()
    assert "LibcloudSpawner configuration: instance_name_template" in log
    assert "The hub does not start with this configuration" in log


def test_the_check_command_finds_the_same_mistakes_offline(misconfigured):
    r = subprocess.run(
        ["libcloudspawner-check", "--config", str(misconfigured.config_path), "--offline"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 1
    for name in MISTAKES:
        assert f"PROBLEM  {name}" in r.stdout, r.stdout


def test_the_spawn_form_page_declares_its_charset(tmp_path, double):
    """JupyterHub sends every page as `text/html` without a charset (its BaseHandler sets the header, after any
    configured one); the page declares UTF-8 in a meta element within its first 1024 bytes, which browsers honour
    (HTML's encoding prescan), and a display name outside ASCII arrives as UTF-8."""
    config = {**original_config(double.url), "userserver_images": [("Debian 12 · JupyterLab", "debian-12-jupyter")]}
    with running_hub(tmp_path, double, config) as hub:
        session = hub.login("cfg-charset")
        page = session.get(f"{hub.url}/hub/spawn", timeout=30)
        assert page.status_code == 200
        assert b'<meta charset="utf-8">' in page.content[:1024]
        assert "Debian 12 · JupyterLab".encode() in page.content
