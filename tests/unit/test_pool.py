"""The warm pool's pure parts: entries, sizing, fingerprints, claim records, the reaper's view of pool VMs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from libcloudspawner import naming
from libcloudspawner.catalog import Catalog, Profile
from libcloudspawner.poolconfig import ClaimRecords, Target, fingerprint, normalize_entry, plan, targets
from libcloudspawner.reaper import judge


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"profile": "small", "min": 2}, {"profile": "small", "min": 2, "max": 2}),
        ({"image": "img", "size": "m1", "min": 1, "max": 3}, {"image": "img", "size": "m1", "min": 1, "max": 3}),
        ({"profile": "small"}, {"profile": "small", "min": 0, "max": 0}),
    ],
)
def test_entries_are_normalised(entry, expected):
    assert normalize_entry(entry) == expected


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"profile": "p", "image": "i", "min": 1}, "either a profile"),
        ({"image": "i", "min": 1}, "both image and size"),
        ({"min": 1}, "either a profile"),
        ({"profile": "p", "min": 3, "max": 2}, "0 <= min <= max"),
        ({"profile": "p", "min": -1}, "0 <= min <= max"),
        ({"profile": "p", "min": "2"}, "integers"),
        ({"profile": "p", "minimum": 2}, "unknown keys"),
        ("p", "are dicts"),
    ],
)
def test_wrong_entries_say_what_is_wrong(entry, message):
    with pytest.raises(ValueError, match=message):
        normalize_entry(entry)


def target(key="k", fp="f", low=1, high=2) -> Target:
    return Target(key, "img", "m1", {}, low, high, fp)


@pytest.mark.parametrize(
    ("idle", "creating", "grow", "drain"),
    [
        ({}, {}, ["k"], []),  # empty: one more
        ({"k|f": ["a"]}, {}, [], []),  # at min
        ({"k|f": []}, {"k|f": 1}, [], []),  # a create under way counts
        ({"k|f": ["a", "b", "c"]}, {}, [], ["c"]),  # above max: the newest surplus goes
        ({"k|old": ["a"]}, {}, ["k"], ["a"]),  # another fingerprint: drained, and the target grows
        ({"gone|f": ["x"], "unusable": ["y"]}, {}, ["k"], ["x", "y"]),  # no target wants them
    ],
)
def test_plan(idle, creating, grow, drain):
    got_grow, got_drain = plan(idle, creating, [target()])
    assert [t.key for t in got_grow] == grow
    assert sorted(got_drain) == sorted(drain)


def test_fingerprint_changes_with_what_a_vm_is_booted_with():
    base = fingerprint("img", "m1", {"userserver_net": "net"}, 9443)
    assert base == fingerprint("img", "m1", {"userserver_net": "net"}, 9443)
    assert len({base, fingerprint("img2", "m1", {"userserver_net": "net"}, 9443),
                fingerprint("img", "m2", {"userserver_net": "net"}, 9443),
                fingerprint("img", "m1", {"userserver_net": "other"}, 9443),
                fingerprint("img", "m1", {"userserver_net": "net"}, 9444)}) == 5  # fmt: skip


def config(**values):
    defaults = {"userserver_net": "net", "security_groups": [], "userserver_keyname": None,
                "instance_metadata": {}, "config_drive": True, "pool_agent_port": 9443, "warm_pool": []}  # fmt: skip
    return SimpleNamespace(**{**defaults, **values})


def test_targets_resolve_profiles_with_their_overrides():
    profile = Profile(slug="gpu", display_name="GPU", size="g1", image="img", overrides={"userserver_net": "gpunet"})
    entries = [normalize_entry({"profile": "gpu", "min": 1}),
               normalize_entry({"image": "img", "size": "m1", "min": 2, "max": 4})]  # fmt: skip
    [gpu, plain] = targets(config(warm_pool=entries), Catalog(profiles=(profile,)))
    assert (gpu.key, gpu.size, gpu.create["userserver_net"]) == ("gpu", "g1", "gpunet")
    assert (plain.key, plain.min, plain.max, plain.create["userserver_net"]) == ("img/m1", 2, 4, "net")
    assert gpu.fingerprint == fingerprint("img", "g1", gpu.create, 9443)


def test_a_target_naming_an_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="not configured"):
        targets(config(warm_pool=[normalize_entry({"profile": "nope", "min": 1})]), Catalog())


def test_claim_records_survive_a_new_reader_and_are_removed(tmp_path):
    path = tmp_path / "claims.json"
    ClaimRecords(path).add("i-1", "m1", "ann")
    ClaimRecords(path).add("i-2", "m2", "bob")
    assert [e["instance_id"] for e in ClaimRecords(path).entries()] == ["i-1", "i-2"]
    ClaimRecords(path).remove("i-1")
    [entry] = ClaimRecords(path).entries()
    assert (entry["instance_id"], entry["member"], entry["server"]) == ("i-2", "m2", "bob")
    assert not list(tmp_path.glob(".pool-claims-*"))  # no temporary file left


def test_unreadable_claim_records_are_an_error_not_an_empty_list(tmp_path):
    path = tmp_path / "claims.json"
    path.write_text("{not json")
    with pytest.raises(OSError, match="cannot be read"):
        ClaimRecords(path).entries()


def pool_vm(created="2026-01-01T00:00:00Z"):
    meta = {naming.TAG_HUB_ID: "hub", naming.TAG_MANAGED_BY: naming.MANAGED_BY, naming.TAG_POOL: "img/m1"}
    return {"id": "p1", "name": "jupyter-pool-ab", "metadata": meta, "created": created}


def test_the_reaper_leaves_pool_vms_to_the_hub_while_the_pool_is_on():
    [verdict] = judge([pool_vm()], [], hub_id="hub", min_age_seconds=0)
    assert not verdict.orphan


def test_the_reaper_deletes_pool_vms_once_the_pool_is_off():
    [verdict] = judge([pool_vm()], [], hub_id="hub", min_age_seconds=0, warm_pool=False)
    assert verdict.orphan


def test_a_wrong_warm_pool_setting_is_a_configuration_problem_not_a_crash():
    from traitlets.config import Config

    from libcloudspawner.spawner import LibcloudSpawner

    spawner = LibcloudSpawner(config=Config({"LibcloudSpawner": {"warm_pool": [{"image": "img", "min": 1}]}}))
    assert "both image and size" in spawner.config_problems["warm_pool"]
    assert spawner.warm_pool == []
