"""LibcloudSpawner's settings and choices against a fake cloud client: traits, options, profiles, problems that
are the administrator's, limits, the server's account and user-data."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
from jupyterhub.spawner import SpawnException

from libcloudspawner.cloud import (
    CloudAmbiguous,
    CloudConfigError,
    CloudNotFound,
)
from libcloudspawner.spawner import LibcloudSpawner


def test_alias_libcloud_driver_params():
    s = LibcloudSpawner(libcloud_driver_params={"arg_user_id": "u", "arg_key": "k"})
    assert s.libcloudparams == {"arg_user_id": "u", "arg_key": "k"}


@pytest.mark.parametrize(
    ("trait", "value", "message"),
    [
        ("forceuser", "root", "system account"),
        ("instance_name_template", "{user}", "unknown field"),
        ("userserver_sizes", [("only",)], "pair"),
        ("instance_metadata", {"jupyterhub-user": "x"}, "reserved"),
        ("openstack_api_version", "3", "openstack_api_version"),
        ("api_retries", -1, "between"),
        ("ca_bundle", "/nonexistent/ca.pem", "no such file"),
        ("profiles", [{"display_name": "A", "size": "s", "image": "i", "overrides": {"port": 1}}], "cannot set"),
    ],
)
def test_traits_refuse_bad_values_clearly(trait, value, message):
    with pytest.raises(Exception, match=message):
        LibcloudSpawner(**{trait: value})


@pytest.mark.parametrize(
    "error, message",
    [
        (lambda name: CloudNotFound(f"the cloud has no image {name!r}", status=404),
         "The cloud has no image 'debian-12-jupyter'; please tell the administrator."),
        # Glance allows two images of one name: the spawner does not guess which one a user boots
        (lambda name: CloudAmbiguous(f"the cloud has 2 images named {name!r} (a, b): configure one by its id",
                                     status=409),
         "The cloud has 2 images named 'debian-12-jupyter' (a, b): configure one by its id;"
         " please tell the administrator."),
    ],
)  # fmt: skip
async def test_an_unusable_image_name_is_an_administrator_problem(spawner, cloud, error, message):
    async def lookup(name):
        raise error(name)

    cloud.image = lookup
    with pytest.raises(SpawnException) as info:
        await spawner.start()
    assert info.value.message == message
    assert "create_node" not in cloud.calls


async def test_profile_overrides_are_applied_before_the_hub_deadline_and_restored():
    from libcloudspawner.choices import apply_user_options

    s = LibcloudSpawner(
        user=SimpleNamespace(name="alice"),
        profiles=[
            {"display_name": "Small", "slug": "small", "size": "m1.small", "image": "img"},
            {"display_name": "Big", "slug": "big", "size": "m1.big", "image": "img",
             "overrides": {"start_timeout": 1200, "userserver_net": "big-net"}},
        ],
    )  # fmt: skip
    await apply_user_options(s, {"profile": "big"})
    assert (s.start_timeout, s.userserver_net) == (1200, "big-net")
    await apply_user_options(s, {"profile": "small"})
    assert (s.start_timeout, s.userserver_net) == (900, None)
    with pytest.raises(SpawnException) as info:
        await apply_user_options(s, {"profile": "huge"})
    assert info.value.status_code == 400


async def test_options_are_validated_once_per_spawn(spawner, cloud, monkeypatch):
    from libcloudspawner import options

    judged = []
    real = options.validate_user_options
    monkeypatch.setattr(options, "validate_user_options", lambda *a: judged.append(a[0]) or real(*a))
    spawner.user_options = spawner.options_from_form({"size": ["m1.small"], "image": ["debian-12-jupyter"]})
    assert judged == []  # the form only converts
    await spawner._run_apply_user_options(spawner.user_options)  # as JupyterHub does before start()
    await spawner.start()
    assert judged == [{"size": "m1.small", "image": "debian-12-jupyter"}]


def test_the_form_converts_what_was_not_offered_and_apply_refuses_it(spawner):
    user_options = spawner.options_from_form({"size": ["m1.huge"]})
    assert user_options == {"size": "m1.huge"}
    with pytest.raises(SpawnException) as info:
        spawner.select(user_options)
    assert info.value.status_code == 400 and "m1.huge" in info.value.message


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("userserver_keyname", "nosuchkey", "The cloud has no key pair 'nosuchkey'; please tell the administrator."),
        ("security_groups", ["nosuchgroup"],
         "The cloud has no security group 'nosuchgroup'; please tell the administrator."),
    ],
)  # fmt: skip
async def test_an_unknown_key_pair_or_security_group_is_the_administrators(spawner, cloud, setting, value, message):
    setattr(spawner, setting, value)
    with pytest.raises(SpawnException) as info:
        await spawner.start()
    assert info.value.jupyterhub_message == message and info.value.status_code == 500
    assert "create_node" not in cloud.calls


async def test_known_key_pair_and_security_group_boot(spawner, cloud):
    spawner.userserver_keyname, spawner.security_groups = "ops", ["jupyter"]
    await spawner.start()
    assert {"key_pair", "security_group", "create_node"} <= set(cloud.calls)


@pytest.mark.parametrize(
    "error",
    [
        CloudConfigError("list images failed: the cloud's service catalog has no endpoint for this region"),
        CloudConfigError("libcloud has no compute provider 'nosuchprovider' (libcloud_provider)"),
    ],
)
async def test_a_wrong_region_or_provider_is_not_blamed_on_the_cloud(spawner, cloud, error):
    async def lookup(name):
        raise error

    cloud.image = lookup
    with pytest.raises(SpawnException) as info:
        await spawner.start()
    assert info.value.jupyterhub_message == "This hub's cloud settings are wrong; please tell the administrator."
    assert str(error) in info.value.log_message


@pytest.mark.parametrize("value", ["a\tb", "\x1b[31mred", "line\rfeed"])
async def test_an_environment_value_systemd_would_drop_is_refused_before_any_cloud_call(spawner, cloud, value):
    spawner.get_env = lambda: {"JUPYTERHUB_API_TOKEN": "t", "PROJECT_NAME": value}
    spawner._render_userdata = lambda: LibcloudSpawner._render_userdata(spawner)
    with pytest.raises(SpawnException) as info:
        await spawner.start()
    assert "PROJECT_NAME" in info.value.jupyterhub_message
    assert cloud.calls == []


async def test_a_full_hub_refuses_a_start_with_429_before_any_cloud_call(spawner, cloud):
    spawner.max_instances = 1
    spawner._deletions().add("being-deleted", "jupyter-old", "bob")  # still kept in the project
    with pytest.raises(SpawnException) as info:
        await spawner.start()
    assert info.value.status_code == 429 and "This hub is full" in info.value.jupyterhub_message
    assert cloud.calls == []
    spawner._deletions().remove("being-deleted")
    await spawner.start()
    assert spawner.instance_id in cloud.nodes


async def test_concurrent_starts_count_against_max_instances(spawner, cloud):
    spawner.max_instances = 1
    cloud.create_delay = 0.2
    first = asyncio.ensure_future(spawner.start())
    await asyncio.sleep(0.05)  # the first start is under way, its instance id not yet saved
    bob = SimpleNamespace(name="bob", url="/user/bob/", escaped_name="bob")
    other = LibcloudSpawner(
        user=bob, max_instances=1, userserver_sizes=[("Small", "m1.small")], userserver_images=[("D", "img")]
    )
    other._client = lambda: cloud
    with pytest.raises(SpawnException) as info:
        await other.start()
    assert info.value.status_code == 429
    await first


def test_the_server_account_avoids_the_accounts_the_manifest_records_for_the_chosen_image(tmp_path):
    manifest = tmp_path / "manifest.json"
    entry = {"name": "deb-1", "os": "debian-12", "published": {"c": {"image_id": "uuid-1"}},
             "accounts": [{"name": "jovyan", "uid": 1000, "sudo": True}]}  # fmt: skip
    manifest.write_text(json.dumps({"schema": 1, "images": [entry]}))
    jovyan = SimpleNamespace(name="jovyan", url="/user/jovyan/", escaped_name="jovyan")
    s = LibcloudSpawner(user=jovyan, userserver_sizes=[("S", "m1.small")], image_manifest=str(manifest))
    s.user_options = {"size": "m1.small", "image": "uuid-1"}
    assert s.linux_user != "jovyan" and s.linux_user.startswith("jovyan_")
    s.forceuser = "jupyter"
    assert s.linux_user == "jupyter"


def test_the_metadata_setting_reaches_the_user_data(spawner):
    spawner.get_env = lambda: {"JUPYTERHUB_API_TOKEN": "t"}
    closed = LibcloudSpawner._render_userdata(spawner)
    spawner.metadata_service_for_server = True
    opened = LibcloudSpawner._render_userdata(spawner)
    assert "nft" in closed and "169.254.169.254" in closed
    assert "nft" not in opened and "169.254.169.254" not in opened
