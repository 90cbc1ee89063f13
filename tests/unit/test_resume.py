"""What outlives a server (pure parts): the start plan for a kept VM, the settings' checks, the create request
with a home volume, the mount in the user-data, the kept-VM state, and the reaper's judgement of volumes."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
import yaml
from jupyterhub import orm
from traitlets.config import Config

from libcloudspawner import limits, naming, resume, settings, userdata
from libcloudspawner.cloud import Volume
from libcloudspawner.reaper import judge_volumes
from libcloudspawner.requests import create_request
from libcloudspawner.spawner import LibcloudSpawner

VOLUME_ID = "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"


@pytest.mark.parametrize(
    ("kept", "booted", "wanted", "plan"),
    [
        (None, (None, None), ("img", "small"), "fresh"),
        ("stop", ("img", "small"), ("img", "small"), "resume"),
        ("shelve", ("img", "small"), ("img", "small"), "resume"),
        ("off", ("img", "small"), ("img", "small"), "resume"),
        ("stop", ("img", "small"), ("img", "big"), "replace"),
        ("stop", ("img", "small"), ("other", "small"), "replace"),
        ("stop", (None, None), ("img", "small"), "replace"),  # booted before the image was recorded
    ],
)
def test_start_plan(kept, booted, wanted, plan):
    assert resume.start_plan(kept=kept, booted=booted, wanted=wanted) == plan


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("home_volume_size_gib", -1, "between 0 and 65536"),
        ("home_volume_name_template", "home-{nobody}", "home_volume_name_template"),
        ("home_volume_timeout_seconds", 0, "positive"),
    ],
)
def test_wrong_home_volume_settings_are_refused(name, value, message):
    with pytest.raises(ValueError, match=message):
        settings.check(name, value)


def test_a_wrong_stop_action_is_a_configuration_problem():
    config = Config()
    config.LibcloudSpawner.stop_action = "hibernate"
    config.LibcloudSpawner.home_volume_size_gib = -5
    spawner = LibcloudSpawner(config=config)
    assert set(spawner.config_problems) == {"stop_action", "home_volume_size_gib"}
    assert spawner.stop_action == "delete" and spawner.home_volume_size_gib == 0


def test_profiles_may_override_the_keep_settings():
    assert {"stop_action", "home_volume_size_gib", "home_volume_type", "home_volume_name_template"} <= set(
        settings.PROFILE_OVERRIDES
    )


def test_the_home_volume_is_mapped_at_boot_and_never_deleted_with_the_vm():
    request = create_request(name="n", image="image-id", size="s", networks=[], user_data="", tags={},
                             volume_ids=[VOLUME_ID])  # fmt: skip
    root, home = request["ex_blockdevicemappings"]
    assert root == {"boot_index": 0, "uuid": "image-id", "source_type": "image", "destination_type": "local",
                    "delete_on_termination": True}  # fmt: skip
    assert home == {"boot_index": -1, "uuid": VOLUME_ID, "source_type": "volume", "destination_type": "volume",
                    "delete_on_termination": False}  # fmt: skip


def test_no_home_volume_no_mapping():
    assert "ex_blockdevicemappings" not in create_request(name="n", image="i", size="s", networks=[], user_data="",
                                                          tags={})  # fmt: skip


def render(home_volume_id=None) -> dict:
    return yaml.safe_load(userdata.render_userdata(username="alice", env={}, cmd=["jupyterhub-singleuser"],
                                                   home_volume_id=home_volume_id))  # fmt: skip


def test_the_user_data_mounts_the_home_volume_before_the_server():
    files = {f["path"]: f for f in render(VOLUME_ID)["write_files"]}
    server_unit = files[userdata.UNIT_PATH]["content"]
    assert "Requires=lcs-home.service\nAfter=lcs-home.service\n" in server_unit
    home_unit = files[userdata.HOME_UNIT_PATH]["content"]
    assert f'ExecStart="{userdata.HOME_SCRIPT_PATH}" "alice" "{VOLUME_ID[:20]}" "/home/alice"' in home_unit
    assert "Type=oneshot" in home_unit and "RemainAfterExit=yes" in home_unit
    script = files[userdata.HOME_SCRIPT_PATH]
    assert script["permissions"] == "0755" and script["content"] == userdata.HOME_SCRIPT


def test_the_mount_script_formats_only_a_disk_without_any_signature():
    script = userdata.HOME_SCRIPT
    assert script.count("mkfs") == 1
    assert '[ "$rc" -eq 2 ] && [ -z "$(wipefs --no-act --noheadings "$dev")" ]' in script
    assert "not formatting it" in script


def test_without_a_home_volume_nothing_is_mounted():
    paths = {f["path"] for f in render()["write_files"]}
    assert userdata.HOME_UNIT_PATH not in paths
    assert "lcs-home" not in next(f["content"] for f in render()["write_files"] if f["path"] == userdata.UNIT_PATH)


@pytest.mark.parametrize("volume_id", ["", "../../etc", "a b", "x" * 65])
def test_a_volume_id_that_is_no_id_is_refused(volume_id):
    with pytest.raises(userdata.UserDataError):
        userdata.volume_serial(volume_id)


def test_a_kept_vm_and_its_token_survive_in_the_state():
    spawner = LibcloudSpawner()
    spawner.load_state({"instance_id": "i1", "instance_name": "jupyter-alice", "address": "10.0.0.1",
                        "image": "img", "size": "small", "kept": "stop", "api_token": "tok",
                        "volume_id": VOLUME_ID})  # fmt: skip
    assert spawner.will_resume
    spawner.clear_state()  # what the hub does after stop() and before start()
    state = spawner.get_state()
    assert (state["instance_id"], state["kept"], state["api_token"], state["volume_id"]) == (
        "i1", "stop", "tok", VOLUME_ID)  # fmt: skip


def test_a_running_vm_leaves_no_token_in_the_state():
    spawner = LibcloudSpawner()
    spawner.load_state({"instance_id": "i1", "image": "img", "size": "small"})
    spawner.api_token = "secret-token"
    assert not spawner.will_resume
    assert "api_token" not in spawner.get_state()
    spawner.clear_state()
    assert spawner.get_state() == {}


def test_kept_vms_count_against_max_instances():
    session = orm.new_session_factory("sqlite://")()
    user = orm.User(name="alice")
    session.add(user)
    session.commit()
    session.add(orm.Spawner(user=user, name="", state={"instance_id": "i1", "kept": "shelve"}))
    session.commit()
    assert limits.instances_in_database(session) == {"i1"}


NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
OLD = "2025-12-01T00:00:00Z"


def vol(vid, user, hub="hub-1", attached=(), created=OLD, home=True):
    tags = naming.volume_tags(hub_id=hub, username=user, servername="")
    if not home:
        del tags[naming.TAG_VOLUME]
    return Volume(id=vid, name=f"jupyter-home-{user}", size_gib=1, status="in-use" if attached else "available",
                  metadata=tags, attached_to=tuple(attached), created=created)  # fmt: skip


def test_judge_volumes_deletes_only_volumes_of_gone_users():
    volumes = [
        vol("v-alice", "alice"),  # user exists
        vol("v-ghost", "ghost"),  # user gone: orphan
        vol("v-other", "ghost", hub="hub-2"),  # another hub's: never judged
        vol("v-plain", "ghost", home=False),  # not a home volume: never judged
        vol("v-attached", "ghost", attached=["server-1"]),
        vol("v-young", "ghost", created="2025-12-31T23:59:00Z"),
        vol("v-undated", "ghost", created=None),
    ]
    verdicts = {v.instance_id: v.orphan for v in judge_volumes(volumes, {"alice"}, hub_id="hub-1",
                                                               min_age_seconds=900, now=NOW)}  # fmt: skip
    assert verdicts == {"v-alice": False, "v-ghost": True, "v-attached": False, "v-young": False,
                        "v-undated": False}  # fmt: skip


def test_the_spawner_deletes_forever_what_it_kept():
    # JupyterHub's Spawner.delete_forever does nothing: the mixin's must come first in the MRO
    assert LibcloudSpawner.delete_forever is resume.KeptServer.delete_forever


PROFILES = [{"display_name": "Kept", "slug": "kept", "size": "m1.small", "image": "debian-12-jupyter",
             "overrides": {"stop_action": "shelve", "home_volume_size_gib": 2}}]  # fmt: skip


def test_a_restarted_hub_applies_the_servers_profile_again():
    """JupyterHub builds the spawner of a running server with its saved ``user_options``, then loads its state:
    the profile's ``stop_action`` must hold for the stop that follows (the hub-wide default would delete)."""
    spawner = LibcloudSpawner(user=SimpleNamespace(name="alice"), profiles=PROFILES, user_options={"profile": "kept"})
    assert spawner.stop_action == "delete"
    spawner.load_state({"instance_id": "i1", "instance_name": "jupyter-alice", "address": "10.0.0.1"})
    assert (spawner.stop_action, spawner.home_volume_size_gib) == ("shelve", 2)


def test_a_profile_gone_from_the_configuration_leaves_the_hub_wide_settings():
    spawner = LibcloudSpawner(user=SimpleNamespace(name="alice"), profiles=PROFILES, user_options={"profile": "old"})
    spawner.load_state({"instance_id": "i1", "instance_name": "jupyter-alice", "address": "10.0.0.1"})
    assert (spawner.stop_action, spawner.home_volume_size_gib) == ("delete", 0)
