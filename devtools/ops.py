"""Operator tasks for a running hub."""

from __future__ import annotations

import os
import shlex

from invoke import Exit, task


@task(
    help={
        "config": "the hub's jupyterhub_config.py (cloud credentials, hub_id and the hub's API URL are read from it)",
        "hub_api_url": "the hub's API URL, e.g. http://127.0.0.1:8081/hub/api (default: $JUPYTERHUB_API_URL, else"
        " the one the hub's configuration gives)",
        "delete": "delete the orphans (default: only list them)",
        "min_age_seconds": "never judge instances younger than this",
    }
)
def reap(c, config, hub_api_url="", delete=False, min_age_seconds=900):
    """Orphan reaper: list (or --delete) this hub's instances that the hub does not know."""
    if not os.environ.get("JUPYTERHUB_API_TOKEN"):
        raise Exit(
            "set JUPYTERHUB_API_TOKEN to a hub token with the scopes list:users, read:users:name,"
            " read:servers and admin:server_state (e.g. a service's api_token)"
        )
    args = ["libcloudspawner-reaper", "--config", config, "--min-age-seconds", str(min_age_seconds)]
    if hub_api_url:
        args += ["--hub-api-url", hub_api_url]
    if delete:
        args.append("--delete")
    c.run(" ".join(shlex.quote(a) for a in args), echo=True, pty=False)


@task(
    help={
        "config": "the hub's jupyterhub_config.py",
        "offline": "check the configuration only; ask the cloud nothing",
    }
)
def check_config(c, config, offline=False):
    """Pre-flight: the hub's LibcloudSpawner settings, then every image, size, network, key pair and group offered."""
    c.run(
        "libcloudspawner-check --config " + shlex.quote(config) + (" --offline" if offline else ""),
        echo=True,
        pty=False,
    )


TASKS = [reap, check_config]
