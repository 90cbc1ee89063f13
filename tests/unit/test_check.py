"""A wrong setting is named with its fix: when the spawner is built (never a bare 500), by ``stop_unless_valid``
at the end of the hub's configuration file, and by the offline part of ``libcloudspawner-check``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from jupyterhub.spawner import SpawnException
from traitlets.config import Config

from libcloudspawner.check import hub_url_findings, main, offline_findings, stop_unless_valid
from libcloudspawner.spawner import LibcloudSpawner

GOOD = {"userserver_sizes": [("Small", "m1.small")], "userserver_images": [("Debian", "debian-12")]}

# the mistakes an administrator made in practice: each must be named, none may raise when the spawner is built
MISTAKES = [
    ("openstack_api_version", "3.0", "openstack_api_version must be '1.1' or '2.0'"),
    ("profiles", [{"display_name": "A", "size": "s", "image": "i", "overrides": {"port": 9000}}], "cannot set"),
    ("instance_name_template", "jupyter-{user}", "unknown field"),
    ("userserver_sizes", [("a", "b", "c")], "pair"),
    ("image_manifest", "/nonexistent/manifest.json", "no such file"),
    ("instance_metadata", {"jupyterhub-user": "x"}, "reserved"),
    ("port", "eighty", "expected an int"),
]


def config(**values) -> Config:
    c = Config()
    for name, value in {**GOOD, **values}.items():
        c.LibcloudSpawner[name] = value
    return c


@pytest.mark.parametrize(("name", "value", "message"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_wrong_setting_is_recorded_not_raised(name, value, message):
    spawner = LibcloudSpawner(config=config(**{name: value}))
    assert message in spawner.config_problems[name]
    assert repr(value) in spawner.config_problems[name]


@pytest.mark.parametrize(("name", "value", "message"), MISTAKES, ids=[m[0] for m in MISTAKES])
async def test_a_wrong_setting_tells_the_user_to_report_it_and_the_log_what(name, value, message):
    spawner = LibcloudSpawner(config=config(**{name: value}), user=SimpleNamespace(name="alice"))
    await spawner._run_apply_user_options({})  # as JupyterHub does: refused by start(), not here
    with pytest.raises(SpawnException) as info:
        await spawner.start()
    assert "please tell the administrator" in info.value.jupyterhub_message
    assert message in info.value.log_message and info.value.status_code == 500


def test_the_other_settings_still_load():
    spawner = LibcloudSpawner(config=config(port="eighty", api_retries=2))
    assert spawner.api_retries == 2 and spawner.port == 8000


def test_a_good_configuration_has_no_problem():
    spawner = LibcloudSpawner(config=config(libcloudparams={"arg_user_id": "u", "arg_key": "k"}))
    assert spawner.config_problems == {}
    assert [f for f in offline_findings(spawner) if not f.ok] == []


@pytest.mark.parametrize(
    ("values", "what"),
    [
        ({"openstack_api_version": "3.0"}, "openstack_api_version"),
        ({"libcloud_provider": "nosuchprovider"}, "libcloud_provider"),
        ({"userserver_sizes": []}, "choices"),
        ({"libcloudparams": {}}, "credentials"),
    ],
)
def test_stop_unless_valid_stops_the_hub_naming_the_problem(values, what, capsys, monkeypatch):
    for name in [n for n in list(__import__("os").environ) if n.startswith("OS_")]:
        monkeypatch.delenv(name)
    c = config(**{"libcloudparams": {"arg_user_id": "u", "arg_key": "k"}, **values})
    with pytest.raises(SystemExit) as info:
        stop_unless_valid(c)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert f"LibcloudSpawner configuration: {what}" in err
    assert "The hub does not start" in err


def test_stop_unless_valid_lets_a_good_configuration_start():
    assert stop_unless_valid(config(libcloudparams={"arg_user_id": "u", "arg_key": "k"})) is None


@pytest.mark.parametrize(
    ("hub", "ok"),
    [
        ({}, False),
        ({"hub_ip": "0.0.0.0"}, False),
        ({"hub_connect_url": "http://127.0.0.1:8081"}, False),
        ({"hub_connect_url": "http://10.99.0.1:8081"}, True),
        ({"hub_ip": "10.99.0.1"}, True),
        ({"hub_connect_url": "http://hub.example.org:8081"}, True),
    ],
)
def test_the_hub_url_vms_use_must_not_be_loopback(hub, ok):
    [finding] = hub_url_findings(hub)
    assert finding.ok is ok


def test_the_command_prints_a_table_and_exits_1_on_a_problem(tmp_path, capsys):
    path = tmp_path / "jupyterhub_config.py"
    path.write_text(
        "c.LibcloudSpawner.libcloudparams = {'arg_user_id': 'u', 'arg_key': 'k'}\n"
        "c.LibcloudSpawner.userserver_sizes = [('Small', 'm1.small')]\n"
        "c.LibcloudSpawner.userserver_images = [('Debian', 'debian-12')]\n"
        "c.LibcloudSpawner.instance_name_template = 'jupyter-{user}'\n"
        "c.JupyterHub.hub_connect_url = 'http://10.99.0.1:8081'\n"
    )
    assert main(["--config", str(path), "--offline"]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM  instance_name_template" in out and "ok       hub URL for VMs" in out
