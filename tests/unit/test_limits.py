"""Counting the instances a hub keeps, from its database (a real JupyterHub schema in SQLite memory)."""

from __future__ import annotations

import pytest
from jupyterhub import orm

from libcloudspawner import limits


@pytest.fixture
def db():
    session = orm.new_session_factory("sqlite://")()
    alice, bob = orm.User(name="alice"), orm.User(name="bob")
    session.add_all([alice, bob])
    session.commit()
    session.add_all([
        orm.Spawner(user=alice, name="", state={"instance_id": "i1", "address": "10.0.0.1"}),
        orm.Spawner(user=alice, name="gpu", state={}),
        orm.Spawner(user=bob, name="", state=None),
        orm.Spawner(user=bob, name="big", state={"instance_id": "i2"}),
    ])  # fmt: skip
    session.commit()
    return session


def test_the_database_names_the_instances_of_servers_with_state(db):
    assert limits.instances_in_database(db) == {"i1", "i2"}
    assert limits.instances_in_database(None) == set()


@pytest.mark.parametrize(
    ("known", "starting", "exclude", "expected"),
    [
        ([{"i1", "i2"}, set()], 0, None, 2),
        ([{"i1", "i2"}, {"i2", "i3"}], 0, None, 3),  # a recorded deletion the state still names counts once
        ([{"i1"}, {"i3"}], 2, None, 4),
        ([{"i1", "i2"}], 0, "i1", 1),  # the starting server's own instance is not another one
    ],
)
def test_kept_instances(known, starting, exclude, expected):
    assert limits.kept_instances(known, starting, exclude=exclude) == expected
