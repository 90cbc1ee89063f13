"""CloudSettings and the checks shared by the spawner's traits and the tools that read the hub's configuration."""

from __future__ import annotations

import re

import pytest

from libcloudspawner.settings import CloudSettings, check, hub_api_url, load_hub_config
from libcloudspawner.spawner import LibcloudSpawner


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("libcloud_provider", " OpenStack ", "openstack"),
        ("openstack_api_version", "2.0", "2.0"),
        ("api_retries", 0, 0),
        ("api_max_workers", 256, 256),
        ("hub_id", "hub-a", "hub-a"),
        ("userserver_sizes", [["Small", "m1.small"]], [("Small", "m1.small")]),
        ("port", 9000, 9000),  # not a checked setting: passes unchanged
    ],
)
def test_check_normalises(name, value, expected):
    assert check(name, value) == expected


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("openstack_api_version", "3.0", "openstack_api_version must be"),
        ("libcloud_provider", "  ", "must name a libcloud compute provider"),
        ("api_timeout_seconds", 0, "api_timeout_seconds must be a positive"),
        ("api_max_workers", 0, "api_max_workers must be between 1 and 256"),
        ("image_manifest", "/nonexistent/manifest.json", "image_manifest: no such file"),
        ("instance_metadata", {"jupyterhub-user": "x"}, "reserved"),
        ("instance_name_template", "jupyter-{user}", "unknown field"),
        ("userserver_sizes", [("a", "b", "c")], "pair"),
    ],
)
def test_check_names_the_setting_and_what_is_allowed(name, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check(name, value)


def test_settings_from_the_spawner_carry_its_traits():
    spawner = LibcloudSpawner(api_timeout_seconds=12, cloud_region="R2", libcloudparams={"arg_user_id": "u"})
    settings = CloudSettings.from_traits(spawner)
    assert (settings.api_timeout_seconds, settings.cloud_region) == (12, "R2")
    assert settings.libcloudparams == {"arg_user_id": "u"}


def test_trait_defaults_are_the_settings_defaults():
    spawner = LibcloudSpawner()
    assert CloudSettings.from_traits(spawner) == CloudSettings()


def test_settings_key_changes_with_any_setting_and_hides_the_secret():
    a = CloudSettings(libcloudparams={"arg_user_id": "u", "arg_key": "s3cret"})
    b = CloudSettings(libcloudparams={"arg_user_id": "u", "arg_key": "other"})
    assert a.key() != b.key() and "s3cret" not in a.key()
    assert "s3cret" not in repr(a)


def test_load_hub_config_reads_the_spawner_sections_and_the_alias(tmp_path):
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(
        "c.LibcloudSpawner.libcloud_driver_params = {'arg_user_id': 'u', 'arg_key': 'k'}\n"
        "c.LibcloudSpawner.api_retries = 2\n"
        "c.LibcloudSpawner.hub_id = 'hub-a'\n"
        "c.JupyterHub.hub_ip = '10.99.0.1'\n"
        "c.JupyterHub.base_url = '/course/'\n"
    )
    hub = load_hub_config(str(config))
    assert hub.cloud.libcloudparams == {"arg_user_id": "u", "arg_key": "k"}
    assert hub.cloud.api_retries == 2 and hub.hub_id == "hub-a"
    assert hub.hub_api_url == "http://10.99.0.1:8081/course/hub/api"


def test_load_hub_config_refuses_a_wrong_value_by_name(tmp_path):
    config = tmp_path / "jupyterhub_config.py"
    config.write_text("c.LibcloudSpawner.openstack_api_version = '3.0'\n")
    with pytest.raises(ValueError, match="openstack_api_version"):
        load_hub_config(str(config))


@pytest.mark.parametrize(
    ("hub", "url"),
    [
        ({}, "http://127.0.0.1:8081/hub/api"),
        ({"hub_ip": "0.0.0.0", "hub_port": 9081}, "http://127.0.0.1:9081/hub/api"),
        ({"hub_ip": "::1"}, "http://[::1]:8081/hub/api"),
        ({"hub_bind_url": "http://10.99.0.1:8081", "base_url": "/x/"}, "http://10.99.0.1:8081/x/hub/api"),
    ],
)
def test_hub_api_url(hub, url):
    assert hub_api_url(hub) == url


@pytest.mark.parametrize(
    ("trait", "runtime"), [("start_timeout", 900), ("http_timeout", 60), ("poll_interval", 60), ("ip", "0.0.0.0")]
)
def test_help_all_shows_the_runtime_defaults(trait, runtime):
    assert getattr(LibcloudSpawner(), trait) == runtime
    help_text = LibcloudSpawner.class_get_trait_help(LibcloudSpawner.class_traits()[trait])
    assert f"Default: {runtime!r}" in help_text
