"""The warm pool: per profile (image + size), VMs booted ahead of time without a user, claimed at spawn.

- **Refill**: one task per hub process (:class:`WarmPool`) counts the pool from the shared fleet view
  (:mod:`fleet`), creates what is missing (at most one create per ``pool_create_interval_seconds``, never
  above ``max_instances``), drains the VMs no target wants (an older image, size, profile or agent: the
  fingerprint of :mod:`poolconfig`), and backs off when a round fails. Every cloud call runs in the client's
  executor; nothing here blocks the event loop.
- **Claim** (:meth:`WarmPool.claim`): a VM is picked and marked in memory with no ``await`` in between, so a
  process never gives one VM to two users. Before the VM is touched, a claim record is written durably beside
  the hub's database (:class:`poolconfig.ClaimRecords`); it is removed once the server's state names the VM.
  A restarted hub deletes the VM of every claim that did not complete before it looks at the pool.
- **Take** (:func:`start_from_pool`): the VM is retagged (exactly the metadata of a fresh instance, the pool
  tags gone) and renamed, the user is handed over (:mod:`handoff`), and the hub waits for Jupyter. Anything
  failing on the way deletes the VM and the spawn boots a new one. A pooled VM serves one user and is deleted
  at stop like any other, never returned to the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from . import deletions, handoff, internal_tls, limits, naming, userdata
from .cloud import CloudClient, CloudError, CreateOutcomeUnknown, Instance
from .fleet import fleet_for
from .poolconfig import (
    BACKOFF_MAX_SECONDS,
    CLAIMS_FILE,
    KEYS_DIRECTORY,
    KEYS_ORPHAN_SECONDS,
    ClaimRecords,
    PoolSettings,
    Target,
    create_settings,
    fingerprint,
    plan,
    pool_tags,
    selection_key,
    targets,
)
from .provision import Provisioner, address_of
from .requests import create_request

__all__ = ["PoolSettings", "WarmPool", "for_spawner", "start_from_pool", "warm_at_hub_start"]
#: how long a claim waits for a restarted hub's recovery of unfinished claims
RECOVERY_WAIT_SECONDS = 30.0


def _tag_key(instance: Instance) -> str | None:
    meta = instance.metadata or {}
    return f"{meta[naming.TAG_POOL]}|{meta.get(naming.TAG_POOL_FINGERPRINT, '')}" if meta.get(naming.TAG_POOL) else None


class WarmPool:
    """The warm pool of one hub (one per process): its targets, refiller, claims and records."""

    def __init__(self, client: CloudClient, hub_id: str, directory: Path, config: Any, session: Any, log) -> None:
        self.client, self.hub_id, self.log, self._session = client, hub_id, log, session
        self.records = ClaimRecords(directory / CLAIMS_FILE)
        self.keys = directory / KEYS_DIRECTORY
        self.deletions = deletions.for_directory(directory)
        self.config = config
        self.targets: list[Target] = targets(config, config.catalog()) if config.warm_pool else []
        self.claimed: set[str] = set()  # handed to a user (or being), by this process or an earlier one
        self.created: dict[str, tuple[str, float]] = {}  # id -> (key|fingerprint, when), until listed
        self.recovered = asyncio.Event()
        self.wake = asyncio.Event()
        self.task: asyncio.Future | None = None
        self.failures = 0
        self.next_create = 0.0
        self.drained: int | None = None  # VMs the last round deleted (None: it had no usable listing)
        self.drain_started = False
        self._background: set[asyncio.Future] = set()

    @property
    def off(self) -> bool:
        """No target: the pool only drains what an earlier configuration left, then its task ends."""
        return not self.targets

    @property
    def period(self) -> float:
        return float(self.config.fleet_refresh_seconds)

    def start(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())

    def wants(self, key: str, fp: str) -> bool:
        return any(t.key == key and t.fingerprint == fp for t in self.targets)

    def instance_ids(self) -> set[str]:
        """Every instance the pool keeps (for the hub-wide cap)."""
        listed = fleet_for(self.client, self.hub_id, self.period, self.log).instances.values()
        return {i.id for i in listed if _tag_key(i) and not i.deleting} | set(self.created)

    # ------------------------------------------------------------------------------ refill
    async def _run(self) -> None:
        try:
            await self._recover()
        finally:
            self.recovered.set()
        while True:
            delay = self.period
            try:
                delay = min(await self.refill_once(), self.period)
                self.failures = 0
                if self.off and self.drained == 0:
                    listed = fleet_for(self.client, self.hub_id, self.period, self.log).instances.values()
                    self._forget_orphan_keys(listed, older_than=0.0)  # no create of this process can land
                    self.log.info("Warm pool: off; no idle pool VM of this hub is left")
                    return
            except Exception as e:  # the refiller survives anything; it says so and backs off
                self.failures += 1
                delay = min(self.period * 2**self.failures, BACKOFF_MAX_SECONDS)
                self.log.warning("Warm pool: refill failed (%s); next try in %.0fs", e, delay)
            self.wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)

    async def refill_once(self) -> float:
        """One round: drain, then create at most one VM; the seconds until the next round is useful."""
        self.drained = None
        fleet = fleet_for(self.client, self.hub_id, self.period, self.log)
        await fleet.refresh()
        if not fleet._usable() or fleet.listed_at is None:
            return self.period
        self.created = {i: v for i, v in self.created.items() if v[1] >= fleet.listed_at and i not in fleet.instances}
        idle: dict[str, list[str]] = {}
        for inst in sorted(fleet.instances.values(), key=lambda i: i.created or ""):
            key = _tag_key(inst)
            if key is None or inst.deleting or inst.id in self.claimed:
                continue
            member = str((inst.metadata or {}).get(naming.TAG_POOL_MEMBER, ""))
            if inst.state == "error" or not member or not (self.keys / member).is_dir():
                key = "unusable"  # no target wants it: drained
            idle.setdefault(key, []).append(inst.id)
        for instance_id, (key, _) in self.created.items():
            idle.setdefault(key, []).append(instance_id)
        grow, drain = plan(idle, {}, self.targets)
        served = limits.instances_in_database(self._session()) if drain else set()
        for instance_id in drain:
            if instance_id in served or instance_id in self.claimed:  # a server owns it: never drained
                continue
            self.log.info("Warm pool: deleting VM %s (not wanted by the configuration, or surplus)", instance_id)
            self.created.pop(instance_id, None)
            await self.client.destroy_node(instance_id)
            listed = fleet.instances.get(instance_id)
            member = str(((listed.metadata if listed else None) or {}).get(naming.TAG_POOL_MEMBER, ""))
            if member:
                handoff.forget_material(self.keys / member)
        self.drained = len([i for i in drain if i not in served and i not in self.claimed])
        self._forget_orphan_keys(fleet.instances.values())
        if not grow:
            return self.period
        wait = self.next_create - time.monotonic()
        if wait > 0:
            return wait
        if not self._room():
            self.log.info("Warm pool: not refilled, the hub keeps its max_instances already")
            return self.period
        self.next_create = time.monotonic() + self.config.pool_create_interval_seconds
        await self._create(grow[0])
        return self.config.pool_create_interval_seconds

    def _room(self) -> bool:
        cap = self.config.max_instances
        if not cap:
            return True
        session = self._session()
        starting = sum(1 for s in limits.STARTING if not s.instance_id)
        known = [limits.instances_in_database(session), self.deletions.pending_ids(), self.instance_ids()]
        return limits.kept_instances(known, starting) < cap

    async def _create(self, target: Target) -> None:
        member = secrets.token_hex(5)
        material = await asyncio.to_thread(handoff.make_material, self.keys / member, member)
        try:
            create = target.create
            body = create_request(
                name=f"jupyter-pool-{member}",
                image=await self.client.image(target.image),
                size=await self.client.size(target.size),
                networks=[await self.client.network(create["userserver_net"])] if create["userserver_net"] else [],
                user_data=handoff.render_pool_userdata(
                    material, port=self.config.pool_agent_port, default_user=bool(create["userserver_keyname"])
                ),
                tags=pool_tags(self.hub_id, target, member),
                extra_metadata=create["instance_metadata"],
                config_drive=create["config_drive"],
                key_name=create["userserver_keyname"],
                security_groups=create["security_groups"],
            )
            instance = await self.client.create_node(body)
        except CreateOutcomeUnknown as e:  # it may have landed: the listing shows it (its keys are kept)
            self.log.warning("Warm pool: create of VM jupyter-pool-%s had an unknown outcome (%s)", member, e)
            raise
        except BaseException:
            handoff.forget_material(self.keys / member)
            raise
        self.created[instance.id] = (f"{target.key}|{target.fingerprint}", time.monotonic())
        self.log.info("Warm pool: created VM jupyter-pool-%s (%s) for %s", member, instance.id, target.key)

    def _forget_orphan_keys(self, listed, older_than: float = KEYS_ORPHAN_SECONDS) -> None:
        """Key directories of VMs that no longer exist (deleted, or a create that failed or never landed), kept
        ``older_than`` seconds (a create under way may not be listed yet)."""
        if not self.keys.is_dir():
            return
        members = {str((i.metadata or {}).get(naming.TAG_POOL_MEMBER)) for i in listed}
        members |= {str(e.get("member")) for e in self.records.entries()}
        for directory in self.keys.iterdir():
            with contextlib.suppress(OSError):
                if directory.name not in members and time.time() - directory.stat().st_mtime >= older_than:
                    shutil.rmtree(directory, ignore_errors=True)

    # ------------------------------------------------------------------------------ claims
    async def _recover(self) -> None:
        """Delete the VM of every claim an earlier hub process did not complete (its state never named it)."""
        entries = self.records.entries()
        in_database = limits.instances_in_database(self._session()) if entries else set()
        for entry in entries:
            instance_id = str(entry["instance_id"])
            self.claimed.add(instance_id)
            if instance_id in in_database:
                self.records.remove(instance_id)  # completed: the server owns it
                continue
            self.log.warning(
                "Warm pool: the claim of VM %s for %s did not complete before the hub stopped; deleting the VM",
                instance_id, entry.get("server"),
            )  # fmt: skip
            await self.discard(instance_id, str(entry.get("member", "")), str(entry.get("server")))

    async def claim(self, key: str, fp: str) -> tuple[Instance, str] | None:
        """A ready VM of this target, now this caller's alone (with its member id); None if there is none."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.recovered.wait()), RECOVERY_WAIT_SECONDS)
        if not self.recovered.is_set():
            return None
        fleet = fleet_for(self.client, self.hub_id, self.period, self.log)
        await fleet.refresh()
        ready = [
            i
            for i in fleet.instances.values()
            if _tag_key(i) == f"{key}|{fp}" and i.state == "running" and not i.deleting and i.id not in self.claimed
            and (i.private_ips or i.public_ips)
            and (self.keys / str((i.metadata or {}).get(naming.TAG_POOL_MEMBER, "-"))).is_dir()
        ]  # fmt: skip
        if not ready:
            return None
        picked = min(ready, key=lambda i: i.created or "")
        self.claimed.add(picked.id)  # no await since the list was made: no other claim can pick it
        self.wake.set()
        return picked, str((picked.metadata or {})[naming.TAG_POOL_MEMBER])

    async def discard(self, instance_id: str, member: str, server: str) -> None:
        """Delete a claimed VM that serves nobody (a failed or unfinished claim); durable if the cloud refuses."""
        try:
            await self.client.destroy_node(instance_id)
        except CloudError as e:
            self.log.warning("Warm pool: deleting VM %s failed (%s); retried in the background", instance_id, e)
            self.deletions.record(instance_id, f"pool VM {member}", server, self.client, self.log)
        handoff.forget_material(self.keys / member)
        self.records.remove(instance_id)

    def discard_later(self, instance_id: str, member: str, server: str) -> None:
        task = asyncio.ensure_future(self.discard(instance_id, member, server))
        self._background.add(task)
        task.add_done_callback(self._background.discard)


_pools: dict[tuple[Path, str], WarmPool] = {}


def for_spawner(spawner: Any) -> WarmPool | None:
    """The process's warm pool of ``spawner``'s hub, started on first use; None when ``warm_pool`` is empty
    (then, in a hub process, the pool's task drains this hub's idle pool VMs once and ends). The configuration
    is read without a profile's overrides (those the spawner may carry for its start)."""
    if spawner.config_problems or not (spawner.warm_pool or spawner._session() is not None):
        return None
    directory = spawner._state_directory().resolve()
    key = (directory, spawner.hub_id)
    if key not in _pools:
        if not spawner.warm_pool and not _pool_state_left(directory):
            return None  # this hub kept no pool VM's keys nor claims: it has no pool VM to drain
        config = _BaseConfig(spawner)
        try:
            _pools[key] = WarmPool(spawner._client(), spawner.hub_id, directory, config, spawner._session, spawner.log)
        except Exception as e:  # a configuration the pool cannot use: no pool, every start boots a new VM
            spawner.log.error("Warm pool: configuration problem, no pool: %s", getattr(e, "log_message", None) or e)
            return None
    pool = _pools[key]
    if pool.off:
        if not pool.drain_started:  # once per process: the drain's task ends when nothing is left
            pool.drain_started = True
            pool.start()
        return None
    pool.start()
    return pool


def _pool_state_left(directory: Path) -> bool:
    """Whether a pool ran beside this database: the keys of a pool VM, or a claim record, are still there."""
    keys = directory / KEYS_DIRECTORY
    with contextlib.suppress(OSError):
        if keys.is_dir() and any(keys.iterdir()):
            return True
    try:
        return bool(ClaimRecords(directory / CLAIMS_FILE).entries())
    except OSError:
        return True  # an unreadable record: let the pool's recovery report it


class _BaseConfig:
    """A spawner's configured values, without the overrides of the profile it may be starting."""

    def __init__(self, spawner: Any) -> None:
        self._spawner = spawner

    def __getattr__(self, name: str) -> Any:
        return self._spawner._profile_saved.get(name, getattr(self._spawner, name))


async def start_from_pool(spawner: Any, selection: Any, provisioner: Provisioner) -> str | None:
    """Serve ``spawner``'s start from the warm pool: its URL once Jupyter answers, or None when the start must
    boot a new VM (no pool for this selection, the pool empty, or a claim that failed: its VM is deleted)."""
    pool = for_spawner(spawner)
    if pool is None or spawner.cloudinit_template:
        return None
    key = selection_key(selection)
    fp = fingerprint(selection.image, selection.size, create_settings(spawner), spawner.pool_agent_port)
    if not pool.wants(key, fp):
        return None
    try:
        body = handoff.claim_body(username=spawner.linux_user, env=spawner.get_env(),
                                  cmd=[*spawner.cmd, *spawner.get_args()],
                                  metadata_service=spawner.metadata_service_for_server)  # fmt: skip
    except userdata.UserDataError:
        return None  # the cold path renders the same files and reports the problem to the user
    emit = provisioner.emit
    emit(8, "Looking for a VM in the warm pool")
    try:
        picked = await pool.claim(key, fp)
    except CloudError as e:
        spawner.log.warning("Warm pool: cannot look for a VM for %s (%s)", spawner._log_name, e)
        picked = None
    if picked is None:
        emit(9, "No VM ready in the warm pool: booting a new VM")
        return None
    instance, member = picked
    name, server = spawner._instance_name(), spawner._log_name
    address = address_of(instance, spawner.address_type) or ""
    try:
        pool.records.add(instance.id, member, server)
    except OSError as e:
        spawner.log.error("Warm pool: cannot record the claim of VM %s (%s); booting a new VM", instance.id, e)
        pool.discard_later(instance.id, member, server)
        emit(9, "The warm pool cannot be used right now: booting a new VM")
        return None
    try:
        tags = {**spawner._tags(), naming.TAG_SPAWN_ID: naming.new_spawn_id()}
        await pool.client.replace_metadata(instance.id, {**spawner.instance_metadata, **tags})
        await pool.client.rename_node(instance.id, name)
        emit(30, f"Took VM {name} from the warm pool; handing it your server")
        if spawner.internal_ssl:  # its address is known: the server's certificate names it
            tls = await internal_tls.issue(spawner, [address])
            body = handoff.claim_body(username=spawner.linux_user, env=spawner.get_env(), tls=tls.claim(),
                                      cmd=[*spawner.cmd, *spawner.get_args()],
                                      metadata_service=spawner.metadata_service_for_server)  # fmt: skip
        await handoff.hand_over(pool.keys / member, address, spawner.pool_agent_port, body,
                                timeout_seconds=spawner.pool_handoff_timeout_seconds)  # fmt: skip
        spawner.instance_id, spawner.instance_name, spawner.instance_address = instance.id, name, address
        spawner._known_since = time.monotonic()
        spawner._persist_state()
        with contextlib.suppress(OSError):  # a restarted hub finds the VM in the database and keeps it
            pool.records.remove(instance.id)
        handoff.forget_material(pool.keys / member)
        url = f"{internal_tls.scheme(spawner)}://{address}:{spawner.port}"
        emit(60, f"Your server is starting on the VM from the warm pool at {address}; waiting for Jupyter to answer")
        base_url = spawner.server.base_url if spawner.server is not None else f"/user/{spawner.user.name}/"
        tls_client = internal_tls.client_context(spawner)
        await provisioner.wait_http(instance.id, url + base_url.rstrip("/") + "/api", tls_client)
    except asyncio.CancelledError:
        if spawner.instance_id != instance.id:
            pool.discard_later(instance.id, member, server)
        raise
    except Exception as e:
        spawner.log.warning("Warm pool: VM %s did not take %s (%s); deleting it, booting a new VM",
                            instance.id, server, e)  # fmt: skip
        spawner.instance_id = spawner.instance_name = spawner.instance_address = None
        pool.discard_later(instance.id, member, server)
        emit(12, "The VM from the warm pool could not take your server: booting a new VM")
        return None
    emit(95, "Jupyter is answering")
    return url


def warm_at_hub_start(c: Any) -> None:
    """For ``jupyterhub_config.py``: start the warm pool with the hub (else it starts with the hub's first
    LibcloudSpawner, at the first server's start or at restart). JupyterHub reads its configuration inside
    its event loop; this waits (bounded) for the hub's database, then builds one spawner for the pool."""
    loop = asyncio.get_running_loop()
    log = logging.getLogger("libcloudspawner.pool")

    async def start() -> None:
        from jupyterhub.app import JupyterHub

        app = JupyterHub.instance()
        deadline = loop.time() + 300
        while getattr(app, "db", None) is None:
            if loop.time() > deadline:
                log.error("Warm pool: the hub did not open its database within 300s; the pool starts later")
                return
            await asyncio.sleep(0.5)
        spawner = app.spawner_class(config=app.config, db=app.db)
        for_spawner(spawner)

    loop.call_soon(lambda: asyncio.ensure_future(start()))
