"""What the hub may keep in its cloud project, counted without a cloud call.

JupyterHub counts active servers (``active_server_limit``) and pending spawns (``concurrent_spawn_limit``);
this counts instances: every server state in the hub's database that names one, every instance a stop could
not delete yet (:mod:`deletions`), and the starts of this process that have not saved theirs yet.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

#: the spawners of this process whose start is under way (counted until they save their instance id)
STARTING: weakref.WeakSet[Any] = weakref.WeakSet()


def instances_in_database(db: Any) -> set[str]:
    """Instance ids named by the spawner states of the hub's database (``db``: its SQLAlchemy session)."""
    if db is None:
        return set()
    from jupyterhub import orm

    return {
        str(spawner.state["instance_id"])
        for spawner in db.query(orm.Spawner)
        if isinstance(spawner.state, dict) and spawner.state.get("instance_id")
    }


def kept_instances(known: Iterable[set[str]], starting: int, *, exclude: str | None = None) -> int:
    """How many instances the hub keeps: the union of ``known`` id sets (but ``exclude``) plus ``starting``."""
    ids: set[str] = set().union(*known)
    ids.discard(exclude or "")
    return len(ids) + starting


def over_cap(cap: int, db: Any, pending_deletions: set[str], spawner: Any) -> bool:
    """Whether one more instance for ``spawner`` would exceed ``cap`` (0: no cap)."""
    if not cap:
        return False
    starting = sum(1 for s in STARTING if s is not spawner and not s.instance_id)
    kept = kept_instances([instances_in_database(db), pending_deletions], starting, exclude=spawner.instance_id)
    return cap <= kept
