"""Orphan reaper: find (and, when asked, delete) this hub's instances that the hub does not know.

An instance is this hub's when its metadata carries ``jupyterhub-managed-by: libcloudspawner`` and
``jupyterhub-hub-id: <hub_id>``. It is an orphan when no server of the hub (running or pending) owns it:

- the hub's server state names a different instance (or none) for that user and server name, and
- the instance is older than ``--min-age-seconds`` (a spawn may be between its create and its state save).

Home volumes (``jupyterhub-volume: home`` and the same tags) are judged too: a volume is an orphan only when
the hub no longer has its user at all (a volume whose user exists is never deleted: the hub deletes it with
the user or the named server, through ``delete_forever``); a volume attached to a server is not judged.

Neutron ports this hub created before their VMs (``internal_ssl``: named like the instance, described with
``jupyterhub-managed-by=libcloudspawner jupyterhub-hub-id=<hub_id>``) are judged too: a port no server is
bound to, older than ``--min-age-seconds``, is an orphan (a bound port goes with its instance).

Untagged instances and volumes, and those of other hubs, are never touched. Dry run by default. The reaper fails
closed: when it cannot be sure of the hub's servers (a token without the scopes it needs, an HTTP error, a
user listed without servers, a partial listing) it deletes nothing and says why (exit status 2), and a run
that finds more orphans than ``--max-deletions`` (default 10) deletes none unless ``--force`` is given.

Usage (reads the hub's own configuration file for the cloud credentials, the hub id and the hub's API URL;
the token comes from ``$JUPYTERHUB_API_TOKEN``)::

    libcloudspawner-reaper --config /etc/jupyterhub/jupyterhub_config.py            # list orphans
    libcloudspawner-reaper --config /etc/jupyterhub/jupyterhub_config.py --delete   # and delete them

As a JupyterHub service (the hub passes ``JUPYTERHUB_API_URL`` and ``JUPYTERHUB_API_TOKEN``)::

    c.JupyterHub.services = [{"name": "libcloud-reaper", "command": [
        "libcloudspawner-reaper", "--config", "/etc/jupyterhub/jupyterhub_config.py",
        "--delete", "--every-seconds", "600"]}]
    c.JupyterHub.load_roles = [{"name": "libcloud-reaper", "services": ["libcloud-reaper"],
        "scopes": ["list:users", "read:users:name", "read:servers", "admin:server_state"]}]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from . import naming, ports
from .cloud import CloudClient, CloudConfigError, CloudError, Instance, Volume, client_for
from .settings import load_hub_config

log = logging.getLogger("libcloudspawner.reaper")


@dataclass(frozen=True)
class HubServer:
    """A server the hub knows: its owner, its name ('' = default server), and its instance id if saved."""

    user: str
    server: str
    instance_id: str | None
    pending: str | None = None


@dataclass(frozen=True)
class Verdict:
    instance_id: str
    instance_name: str
    user: str
    server: str
    age_seconds: float | None
    orphan: bool
    reason: str
    kind: str = "instance"  # or "volume", "port"


def _age_seconds(created: str | None, now: dt.datetime) -> float | None:
    if not created:
        return None
    try:
        when = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return (now - when).total_seconds()


def judge(
    instances: Iterable[Mapping[str, Any]],
    hub_servers: Iterable[HubServer],
    *,
    hub_id: str,
    min_age_seconds: float,
    now: dt.datetime | None = None,
    warm_pool: bool = True,
) -> list[Verdict]:
    """Decide, for each instance of this hub, whether it is an orphan. Pure: no cloud, no hub.

    ``instances``: dicts with ``id``, ``name``, ``metadata``, ``created`` (ISO 8601, may be missing).
    Instances not tagged for this hub are left out of the result altogether. Warm pool VMs (no user yet) are
    the hub's to manage while ``warm_pool`` is on; with the pool off they are orphans like any other.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    hub_tag = naming.metadata_value(hub_id)
    known: dict[tuple[str, str], HubServer] = {}
    for s in hub_servers:
        known[(naming.metadata_value(s.user), naming.metadata_value(s.server))] = s
    verdicts = []
    for inst in instances:
        meta = inst.get("metadata") or {}
        if meta.get(naming.TAG_MANAGED_BY) != naming.MANAGED_BY or meta.get(naming.TAG_HUB_ID) != hub_tag:
            continue  # untagged, or another hub's: never ours to judge
        user = str(meta.get(naming.TAG_USER, ""))
        server = str(meta.get(naming.TAG_SERVER_NAME, ""))
        age = _age_seconds(inst.get("created"), now)
        owner = known.get((user, server))

        def verdict(orphan: bool, reason: str, inst=inst, user=user, server=server, age=age) -> Verdict:
            return Verdict(str(inst["id"]), str(inst.get("name", "")), user, server, age, orphan, reason)

        if meta.get(naming.TAG_POOL) and warm_pool:
            verdicts.append(verdict(False, "a warm pool VM: the hub keeps or drains it"))
        elif owner is not None and owner.instance_id == str(inst["id"]):
            verdicts.append(verdict(False, "the hub's server state names this instance"))
        elif owner is not None and (owner.pending or owner.instance_id is None):
            verdicts.append(verdict(False, f"the hub's server is {owner.pending or 'starting'}; not judged"))
        elif age is None:
            verdicts.append(verdict(False, "creation time unknown; not judged"))
        elif age < min_age_seconds:
            verdicts.append(verdict(False, f"younger than {min_age_seconds:.0f}s; not judged yet"))
        elif owner is not None:
            verdicts.append(verdict(True, f"the hub's server uses another instance ({owner.instance_id})"))
        else:
            verdicts.append(verdict(True, "no server of the hub owns it"))
    return verdicts


def judge_volumes(
    volumes: Iterable[Volume],
    users: Iterable[str],
    *,
    hub_id: str,
    min_age_seconds: float,
    now: dt.datetime | None = None,
) -> list[Verdict]:
    """Decide, for each home volume of this hub, whether it is an orphan: its user is gone from the hub
    (``users``: every user name the hub listed). Pure: no cloud, no hub. Other volumes are left out."""
    now = now or dt.datetime.now(dt.timezone.utc)
    hub_tag = naming.metadata_value(hub_id)
    known = {naming.metadata_value(u) for u in users}
    verdicts = []
    for vol in volumes:
        meta = vol.metadata or {}
        if (meta.get(naming.TAG_MANAGED_BY) != naming.MANAGED_BY or meta.get(naming.TAG_HUB_ID) != hub_tag
                or meta.get(naming.TAG_VOLUME) != naming.HOME_VOLUME):  # fmt: skip
            continue
        user, server = str(meta.get(naming.TAG_USER, "")), str(meta.get(naming.TAG_SERVER_NAME, ""))
        age = _age_seconds(vol.created, now)

        def verdict(orphan: bool, reason: str, vol=vol, user=user, server=server, age=age) -> Verdict:
            return Verdict(vol.id, vol.name or "", user, server, age, orphan, reason, kind="volume")

        if user in known:
            verdicts.append(verdict(False, "its user exists; only deleting the user deletes it"))
        elif vol.attached_to:
            verdicts.append(verdict(False, f"attached to {', '.join(vol.attached_to)}; not judged"))
        elif age is None:
            verdicts.append(verdict(False, "creation time unknown; not judged"))
        elif age < min_age_seconds:
            verdicts.append(verdict(False, f"younger than {min_age_seconds:.0f}s; not judged yet"))
        else:
            verdicts.append(verdict(True, "its user is gone from the hub"))
    return verdicts


#: what the reaper's token must hold (unfiltered; broader scopes such as admin:users include them)
REQUIRED_SCOPES = ("list:users", "read:users:name", "read:servers", "admin:server_state")
PAGE_SIZE = 200


class Refusal(RuntimeError):
    """The reaper cannot be sure of what the hub runs: it deletes nothing and says why."""


def judge_ports(
    found: Iterable[ports.Port], *, hub_id: str, min_age_seconds: float, now: dt.datetime | None = None
) -> list[Verdict]:
    """Decide, for each port of this hub, whether it is an orphan: no server is bound to it and it is older
    than ``min_age_seconds`` (a start creates the port before its VM). Pure: no cloud, no hub."""
    now = now or dt.datetime.now(dt.timezone.utc)
    verdicts = []
    for port in found:
        if port.description != ports.description(hub_id):
            continue
        age = _age_seconds(port.created, now)
        if port.bound:
            orphan, reason = False, f"bound to instance {port.device_id} (judged with it)"
        elif age is None or age < min_age_seconds:
            orphan, reason = False, "unbound but recent (a start may be about to boot its VM on it)"
        else:
            orphan, reason = True, "no server is bound to it"
        verdicts.append(Verdict(port.id, port.name, "", "", age, orphan, reason, kind="port"))
    return verdicts


def _get(api_url: str, path: str, token: str, timeout_seconds: float, **params: Any) -> Any:
    import requests

    headers = {"Authorization": f"token {token}", "Accept": "application/jupyterhub-pagination+json"}
    try:
        r = requests.get(f"{api_url.rstrip('/')}{path}", params=params, headers=headers, timeout=timeout_seconds)
    except requests.RequestException as e:
        raise Refusal(f"the hub API did not answer GET {path}: {e}") from None
    if r.status_code != 200:
        raise Refusal(f"the hub API answered {r.status_code} to GET {path}: {r.text[:200]}")
    try:
        return r.json()
    except ValueError:
        raise Refusal(f"the hub API answered GET {path} with something that is not JSON") from None


def check_token_scopes(api_url: str, token: str, *, timeout_seconds: float = 30.0) -> None:
    """Refuse unless the token holds every scope of ``REQUIRED_SCOPES`` (the hub lists them expanded)."""
    model = _get(api_url, "/user", token, timeout_seconds)
    held = set(model.get("scopes") or ()) if isinstance(model, dict) else set()
    missing = [s for s in REQUIRED_SCOPES if s not in held]
    if missing:
        raise Refusal(
            f"the reaper's token lacks the scope(s) {', '.join(missing)} (unfiltered): without them the hub hides"
            " servers, and every instance would look orphaned. Give its role the scopes " + ", ".join(REQUIRED_SCOPES)
        )


def hub_servers_from_api(
    api_url: str, token: str, *, timeout_seconds: float = 30.0, users: set[str] | None = None
) -> list[HubServer]:
    """Every running or pending server the hub knows, with its spawner state (paginated REST API); the name of
    every user listed is added to ``users`` when given (read only once the whole listing is complete).

    Fails closed (:class:`Refusal`): a token without the needed scopes, an HTTP error, a user listed without
    its servers or a server without its state, an answer without pagination, or pages that do not add up to
    the announced total."""
    check_token_scopes(api_url, token, timeout_seconds=timeout_seconds)
    servers: list[HubServer] = []
    seen = 0
    offset = 0
    total = None
    while True:
        body = _get(api_url, "/users", token, timeout_seconds, offset=offset, limit=PAGE_SIZE)
        if not isinstance(body, dict) or not isinstance(body.get("_pagination"), dict):
            raise Refusal("the hub API listed users without pagination information: the listing may be partial")
        pagination, items = body["_pagination"], body.get("items")
        if not isinstance(items, list) or (total is not None and pagination.get("total") != total):
            raise Refusal("the hub's user list changed or came incomplete while it was read; try again")
        total = pagination.get("total")
        for user in items:
            if not isinstance(user.get("servers"), dict):
                raise Refusal(
                    f"the hub API listed user {user.get('name')!r} without its servers: the reaper's token needs"
                    " the read:servers scope for every user"
                )
            if users is not None:
                users.add(user["name"])
            for name, model in user["servers"].items():
                state = model.get("state")
                if state is None:
                    raise Refusal(
                        "the hub API gave no server state: the reaper's token needs the admin:server_state scope"
                    )
                servers.append(HubServer(user["name"], name, state.get("instance_id"), model.get("pending")))
        seen += len(items)
        nxt = pagination.get("next")
        if not nxt:
            break
        offset = nxt["offset"]
    if seen != total:
        raise Refusal(f"the hub announced {total} users but listed {seen}: the listing is partial")
    return servers


def as_listing(instances: Iterable[Instance]) -> list[dict[str, Any]]:
    """What :func:`judge` reads of each instance."""
    return [{"id": i.id, "name": i.name, "metadata": dict(i.metadata or {}), "created": i.created} for i in instances]


async def reap_once(
    client: CloudClient,
    hub_id: str,
    hub_servers: list[HubServer],
    *,
    delete: bool,
    min_age_seconds: float,
    max_deletions: int | None = None,
    users: set[str] | None = None,
    warm_pool: bool = True,
) -> list[Verdict]:
    """Judge this hub's instances and, given the hub's ``users`` (a complete listing), its home volumes;
    with ``delete``, delete the orphans: none at all (:class:`Refusal`) when there are more than
    ``max_deletions`` in all (``None``: no cap). A cloud without block storage has no volumes to judge."""
    verdicts = judge(as_listing(await client.list_nodes()), hub_servers, hub_id=hub_id, min_age_seconds=min_age_seconds,
                     warm_pool=warm_pool)  # fmt: skip
    if users is not None:
        try:
            tags = {naming.TAG_MANAGED_BY: naming.MANAGED_BY, naming.TAG_HUB_ID: naming.metadata_value(hub_id),
                    naming.TAG_VOLUME: naming.HOME_VOLUME}  # fmt: skip
            volumes = await client.find_volumes(name=None, tags=tags)
        except CloudConfigError as e:
            log.info("No home volumes to judge: %s", e)
            volumes = []
        verdicts += judge_volumes(volumes, users, hub_id=hub_id, min_age_seconds=min_age_seconds)
    try:
        verdicts += judge_ports(await ports.find_ports(client, hub_id=hub_id), hub_id=hub_id,
                                min_age_seconds=min_age_seconds)  # fmt: skip
    except CloudConfigError as e:
        log.info("No ports to judge: %s", e)
    orphans = sum(v.orphan for v in verdicts)
    if delete and max_deletions is not None and orphans > max_deletions:
        raise Refusal(
            f"{orphans} orphans, more than --max-deletions {max_deletions}: nothing deleted. So many orphans"
            " may mean that the hub's listing is wrong; check the dry run, then use --force (or raise the cap)"
        )
    for v in verdicts:
        if v.orphan and delete:
            log.warning("Deleting orphan %s %s (%s) of %s/%s: %s", v.kind, v.instance_name, v.instance_id,
                        v.user, v.server, v.reason)  # fmt: skip
            if v.kind == "volume":
                await client.delete_volume(v.instance_id)
            elif v.kind == "port":
                await ports.delete_port(client, v.instance_id)
            else:
                await client.destroy_node(v.instance_id)
        elif v.orphan:
            log.warning("Orphan %s %s (%s) of %s/%s: %s (dry run: not deleted)", v.kind, v.instance_name,
                        v.instance_id, v.user, v.server, v.reason)  # fmt: skip
    return verdicts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="libcloudspawner-reaper", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the hub's jupyterhub_config.py (cloud credentials, hub_id)")
    p.add_argument(
        "--hub-api-url",
        default=os.environ.get("JUPYTERHUB_API_URL"),
        help="the hub's API URL (default: $JUPYTERHUB_API_URL, set when run as a hub service; else the one the"
        " hub's configuration gives, e.g. http://127.0.0.1:8081/hub/api)",
    )
    p.add_argument(
        "--token-env",
        default="JUPYTERHUB_API_TOKEN",
        help="environment variable holding the hub API token (never passed on the command line)",
    )
    p.add_argument("--delete", action="store_true", help="delete the orphans (default: only list them)")
    p.add_argument(
        "--min-age-seconds",
        type=float,
        default=900.0,
        help="never judge instances younger than this (a spawn may be between create and save)",
    )
    p.add_argument(
        "--max-deletions",
        type=int,
        default=10,
        help="refuse to delete anything when a run finds more orphans than this (default 10)",
    )
    p.add_argument("--force", action="store_true", help="lift --max-deletions")
    p.add_argument("--every-seconds", type=float, default=0.0, help="run forever, once per interval (service mode)")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON lines")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "traitlets"):  # the hub's configuration file may import JupyterHub
        logging.getLogger(noisy).setLevel(logging.WARNING)
    token = os.environ.get(args.token_env)
    if not token:
        p.error(
            f"a hub API token is needed in ${args.token_env}: give the reaper a service token with the scopes"
            " list:users, read:users:name, read:servers and admin:server_state (see this command's module"
            " documentation for the service and role definition)"
        )
    try:
        hub = load_hub_config(args.config)
        client = client_for(hub.cloud)
    except (OSError, ValueError, CloudError) as e:
        p.error(f"cannot use the hub's configuration {args.config}: {e}")
    api_url = args.hub_api_url or hub.hub_api_url

    async def run() -> int:
        while True:
            try:
                users: set[str] = set()
                servers = hub_servers_from_api(api_url, token, users=users)
                verdicts = await reap_once(
                    client, hub.hub_id, servers, delete=args.delete, min_age_seconds=args.min_age_seconds,
                    max_deletions=None if args.force else args.max_deletions, users=users,
                    warm_pool=hub.warm_pool,
                )  # fmt: skip
            except Refusal as e:
                log.error("reaper refused to run, nothing deleted: %s", e)
                if args.every_seconds <= 0:
                    return 2
            else:
                orphans = [v for v in verdicts if v.orphan]
                for v in verdicts:
                    if args.json:
                        print(json.dumps(asdict(v)), flush=True)
                print(f"hub {hub.hub_id}: {len(verdicts)} instances, volumes and ports, {len(orphans)} orphans"
                      + (" deleted" if args.delete else " (dry run)"), file=sys.stderr, flush=True)  # fmt: skip
            if args.every_seconds <= 0:
                return 0
            await asyncio.sleep(args.every_seconds)

    try:
        return asyncio.run(run())
    except Exception as e:  # a clear line for cron mail, not a traceback
        log.error("reaper failed: %s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
