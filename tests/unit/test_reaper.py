"""The reaper's judgement (pure): which of this hub's instances are orphans, and which are never touched."""

from __future__ import annotations

import datetime as dt

import pytest

from libcloudspawner import naming, ports
from libcloudspawner.reaper import HubServer, judge, judge_ports

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)
OLD = "2026-11-25T10:00:00Z"  # 2 h before NOW
YOUNG = "2026-11-25T11:59:00Z"  # 1 min before NOW
HUB = "hub-a"
LONG_USER = "a" * 300  # beyond Nova's 255-character metadata values: tags carry a hashed form


def inst(iid, user="alice", server="", hub=HUB, created=OLD, managed=True, extra=None):
    meta = dict(naming.instance_tags(hub_id=hub, username=user, servername=server))
    if not managed:
        meta = {}
    meta.update(extra or {})
    return {"id": iid, "name": f"jupyter-{iid}", "metadata": meta, "created": created}


CASES = [
    # id, instances, hub servers, expected {instance id: orphan?} (absent = never judged)
    ("state names it", [inst("i1")], [HubServer("alice", "", "i1")], {"i1": False}),
    ("nobody owns it, old", [inst("i1")], [], {"i1": True}),
    ("nobody owns it, young", [inst("i1", created=YOUNG)], [], {"i1": False}),
    ("creation time unknown", [inst("i1", created=None)], [], {"i1": False}),
    ("server pending, no id yet", [inst("i1")], [HubServer("alice", "", None, "spawn")], {"i1": False}),
    ("server stopping", [inst("i1")], [HubServer("alice", "", "i1", "stop")], {"i1": False}),
    ("server uses another instance", [inst("i1")], [HubServer("alice", "", "i2")], {"i1": True}),
    ("named server", [inst("i1", server="gpu")], [HubServer("alice", "gpu", "i1")], {"i1": False}),
    ("named vs default server", [inst("i1", server="gpu")], [HubServer("alice", "", "i1")], {"i1": True}),
    ("other hub: untouched", [inst("i1", hub="hub-b")], [], {}),
    ("untagged: untouched", [inst("i1", managed=False)], [], {}),
    ("only hub id, no managed-by: untouched", [inst("i1", managed=False, extra={naming.TAG_HUB_ID: HUB})], [], {}),
    ("long user name", [inst("i1", user=LONG_USER)], [HubServer(LONG_USER, "", "i1")], {"i1": False}),
    (
        "two users, one orphan",
        [inst("i1"), inst("i2", user="bob")],
        [HubServer("alice", "", "i1")],
        {"i1": False, "i2": True},
    ),
]


@pytest.mark.parametrize(("instances", "servers", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_judge(instances, servers, expected):
    verdicts = judge(instances, servers, hub_id=HUB, min_age_seconds=900, now=NOW)
    assert {v.instance_id: v.orphan for v in verdicts} == expected


def test_every_verdict_says_why():
    verdicts = judge([inst("i1"), inst("i2", created=YOUNG)], [], hub_id=HUB, min_age_seconds=900, now=NOW)
    assert all(v.reason for v in verdicts)
    assert [v.user for v in verdicts] == ["alice", "alice"]


def port(pid, hub=HUB, device="", created=OLD):
    return ports.Port(id=pid, name="jupyter-alice", description=ports.description(hub), addresses=("10.99.0.9",),
                      device_id=device, created=created)  # fmt: skip


@pytest.mark.parametrize(
    ("found", "orphan"),
    [
        (port("p1"), True),  # unbound and old: its server is gone (or never came)
        (port("p2", device="i1"), False),  # bound: it goes with its instance
        (port("p3", created=YOUNG), False),  # a start may be about to boot its VM on it
    ],
    ids=["unbound-old", "bound", "unbound-young"],
)
def test_ports_of_this_hub(found, orphan):
    [verdict] = judge_ports([found], hub_id=HUB, min_age_seconds=900, now=NOW)
    assert (verdict.kind, verdict.orphan) == ("port", orphan)


def test_other_hubs_ports_are_never_judged():
    assert judge_ports([port("p1", hub="hub-b")], hub_id=HUB, min_age_seconds=900, now=NOW) == []
