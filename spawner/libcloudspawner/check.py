"""Configuration checks: at hub start (no cloud call), and the pre-flight command (asks the cloud).

At hub start: ``stop_unless_valid(c)`` as the last line of ``jupyterhub_config.py`` stops the hub on a wrong
setting, with one message per problem naming the setting, the value and what is allowed.

The pre-flight command also asks the cloud whether everything offered exists and is unambiguous::

    libcloudspawner-check --config /etc/jupyterhub/jupyterhub_config.py

It prints a table with a fix per problem and exits 1 if there is any (0 when all is well).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from traitlets import TraitError

from . import userdata
from .catalog import CatalogError
from .cloud import CloudConfigError, CloudError, client_for
from .config import CredentialsError
from .settings import CloudSettings


@dataclass(frozen=True)
class Finding:
    what: str
    ok: bool
    detail: str
    fix: str = ""


def _problem(what: str, detail: Any, fix: str = "") -> Finding:
    return Finding(what, False, str(detail), fix)


def offline_findings(spawner: Any) -> list[Finding]:
    """What is wrong with a constructed spawner's configuration, found without a cloud call."""
    found = [_problem(name, detail) for name, detail in spawner.config_problems.items()]
    try:
        catalog = spawner.catalog()
    except (CatalogError, ValueError, OSError) as e:
        return [
            *found,
            _problem("choices", e, "fix the image manifest or the choices (userserver_sizes/images, profiles)"),
        ]
    if not catalog.profiles and not (catalog.sizes and catalog.images):
        found.append(
            _problem(
                "choices",
                "no size or no image to offer",
                "set userserver_sizes and userserver_images (or profiles, or image_manifest for the images)",
            )
        )
    for profile in catalog.profiles:
        for key, value in profile.overrides.items():
            saved = getattr(spawner, key)
            try:
                setattr(spawner, key, value)
            except (TraitError, ValueError) as e:
                found.append(_problem(f"profile {profile.slug!r}", f"override {key}: {e}"))
            finally:
                setattr(spawner, key, saved)
    try:
        template = userdata.load_template(spawner.cloudinit_template) if spawner.cloudinit_template else None
        userdata.render_userdata(username="check", env={}, cmd=["jupyterhub-singleuser"], template=template)
    except (userdata.UserDataError, OSError) as e:
        found.append(_problem("cloudinit_template", e, "fix the template (StrictUndefined; pass values via tojson)"))
    settings = CloudSettings.from_traits(spawner)
    try:
        settings.driver_arguments()
    except CredentialsError as e:
        found.append(_problem("credentials", e))
    try:
        from libcloud.compute.providers import get_driver

        get_driver(settings.libcloud_provider)
    except AttributeError:
        found.append(
            _problem(
                "libcloud_provider",
                f"libcloud has no compute provider {settings.libcloud_provider!r}",
                "use a name of libcloud.compute.types.Provider, e.g. 'openstack'",
            )
        )
    return found


def _offered(spawner: Any) -> dict[str, set[str]]:
    """Every cloud name the configuration offers, by kind (profiles' overrides included)."""
    catalog = spawner.catalog()
    names: dict[str, set[str]] = {"size": set(), "image": set(), "network": set(), "key pair": set(),
                                  "security group": set()}  # fmt: skip
    names["size"].update(c.cloud_name for c in catalog.sizes)
    names["image"].update(c.cloud_name for c in catalog.images)
    overrides: list[Mapping[str, Any]] = [{}]
    for profile in catalog.profiles:
        names["size"].add(profile.size)
        names["image"].add(profile.image)
        overrides.append(profile.overrides)
    for extra in overrides:
        net = extra.get("userserver_net", spawner.userserver_net)
        key = extra.get("userserver_keyname", spawner.userserver_keyname)
        names["network"].update([net] if net else [])
        names["key pair"].update([key] if key else [])
        names["security group"].update(extra.get("security_groups", spawner.security_groups))
    return names


async def cloud_findings(spawner: Any) -> list[Finding]:
    """Whether the cloud has every size, image, network, key pair and security group offered, unambiguously."""
    try:
        client = client_for(CloudSettings.from_traits(spawner))
    except CloudError as e:
        return [_problem("credentials", e)]
    lookups = {"size": client.size, "image": client.image, "network": client.network,
               "key pair": client.key_pair, "security group": client.security_group}  # fmt: skip
    found = []
    offered = _offered(spawner)
    try:
        for kind, wanted in offered.items():
            for name in sorted(wanted):
                try:
                    item = await lookups[kind](name)
                    found.append(Finding(f"{kind} {name!r}", True, f"id {getattr(item, 'id', None) or name}"))
                    if kind == "security group":
                        found.append(posture_finding(name, item, spawner.port))
                except CloudConfigError as e:
                    found.append(_problem(f"{kind} {name!r}", e, "offer a name the cloud has once, or its id"))
                    if not str(e).startswith("the cloud has"):  # provider or region: every lookup fails alike
                        return found
        if not offered["security group"]:
            found.append(await default_group_posture(client, spawner.port))
    except CloudError as e:
        found.append(_problem("cloud API", e, "check the credentials, the auth URL and that the cloud answers"))
    finally:
        client.close()
    return found


POSTURE_FIX = (
    "give the VMs a group of their own that opens the port to the hub and the proxy only"
    " (docs/configuration.md, Network posture)"
)


def member_rules(group: Any, port: int) -> list[str]:
    """The groups whose members a rule of ``group`` lets reach ``port`` (TCP). libcloud's rule holds the remote
    group as ``{"name": <its id>, ...}`` and drops the direction; Neutron's egress rules name no remote group."""
    return sorted({
        str(r.group.get("name")) for r in getattr(group, "rules", None) or []
        if r.group and r.ip_protocol in (None, "tcp", "6")
        and (r.from_port is None or r.from_port <= port) and (r.to_port is None or port <= r.to_port)
    })  # fmt: skip


def posture_finding(name: str, group: Any, port: int) -> Finding:
    """One user's server must not be reachable from another user's VM: a group that lets its own (or another
    group's) members reach the server's port lets every VM in it reach every other."""
    what = f"security group {name!r} posture"
    members = member_rules(group, port)
    if members:
        return _problem(what, f"members of group {', '.join(members)} reach port {port}: any user's VM can reach"
                        " another user's server", POSTURE_FIX)  # fmt: skip
    return Finding(what, True, f"no group-to-group rule opens port {port}")


async def default_group_posture(client: Any, port: int) -> Finding:
    """No ``security_groups``: Nova gives the VMs the project's ``default`` group, which OpenStack creates
    with a rule letting its members reach each other on every port."""
    try:
        group = await client.security_group("default")
    except CloudConfigError as e:
        return Finding("security_groups", True, f"not set; the project's default group not checked ({e})")
    finding = posture_finding("default", group, port)
    if finding.ok:
        return Finding("security_groups", True, f"not set: the VMs get the project's default group ({finding.detail})")
    return _problem("security_groups", f"not set: the VMs get the project's default group: {finding.detail}",
                    POSTURE_FIX)  # fmt: skip


def hub_url_findings(hub: Mapping[str, Any]) -> list[Finding]:
    """The VMs reach the hub's API at hub_connect_url (or hub_connect_ip / hub_ip): not at a loopback address."""
    url = hub.get("hub_connect_url")
    host = urlparse(str(url)).hostname if url else (hub.get("hub_connect_ip") or hub.get("hub_ip") or "127.0.0.1")
    fix = "set c.JupyterHub.hub_connect_url to an address of the hub that the VMs' network reaches"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return [Finding("hub URL for VMs", True, f"{host} (a name: the VMs must resolve it)")]
    if address.is_loopback or address.is_unspecified:
        return [_problem("hub URL for VMs", f"{host} is not reachable from a VM", fix)]
    return [Finding("hub URL for VMs", True, str(host))]


def internal_ssl_findings(hub: Mapping[str, Any], spawner: Any) -> list[Finding]:
    """With ``internal_ssl``: the VMs reach the hub over https at an address its certificate names
    (``trusted_alt_names``; JupyterHub adds only localhost and the host's FQDN), and the VMs' ports can be made
    first (OpenStack, the 2.0 driver, ``userserver_net``)."""
    if not hub.get("internal_ssl"):
        return []
    url = str(hub.get("hub_connect_url") or "")
    host = urlparse(url).hostname if url else (hub.get("hub_connect_ip") or hub.get("hub_ip") or "127.0.0.1")
    try:
        wanted = f"IP:{ipaddress.ip_address(host)}"
    except ValueError:
        wanted = f"DNS:{host}"
    findings = []
    if url and urlparse(url).scheme != "https":
        findings.append(_problem("internal_ssl", f"hub_connect_url {url} is not https",
                                 "with internal_ssl the hub serves https: use https:// in it"))  # fmt: skip
    names = [str(n) for n in hub.get("trusted_alt_names") or ()]
    if wanted in names or wanted == f"DNS:{socket.getfqdn()}":
        findings.append(Finding("trusted_alt_names", True, f"the hub's certificate names {host}"))
    else:
        findings.append(_problem(
            "trusted_alt_names", f"internal_ssl: the hub's certificate does not name {host}, where the VMs reach it",
            f"add {wanted!r} to c.JupyterHub.trusted_alt_names (an existing hub certificate is kept: set"
            " c.JupyterHub.recreate_internal_certs = True once)",
        ))  # fmt: skip
    if spawner.libcloud_provider.lower() != "openstack" or str(spawner.openstack_api_version).startswith("1"):
        findings.append(_problem("internal_ssl", "needs OpenStack's Neutron ports (provider openstack, api 2.0)",
                                 "use the OpenStack provider with openstack_api_version '2.0'"))  # fmt: skip
    if not spawner.userserver_net:
        findings.append(_problem("internal_ssl", "needs userserver_net (each VM's port is created on it first)",
                                 "set c.LibcloudSpawner.userserver_net"))  # fmt: skip
    return findings


def stop_unless_valid(config: Any) -> None:
    """For the end of ``jupyterhub_config.py``: ``stop_unless_valid(c)``. The hub does not start while a
    LibcloudSpawner setting is wrong: each problem is printed with its fix, then the process exits (status 1).

    JupyterHub imports spawner classes before it reads its configuration and calls no hook of theirs when it
    starts, so this one line is how a configuration refuses to start a hub. Without it, a wrong setting is
    logged when the spawner is built and each user is told to report it; nothing is booted."""
    from .spawner import LibcloudSpawner

    problems = [f for f in offline_findings(LibcloudSpawner(config=config)) if not f.ok]
    if not problems:
        return
    for p in problems:
        print(
            f"LibcloudSpawner configuration: {p.what}: {p.detail}" + (f" ({p.fix})" if p.fix else ""), file=sys.stderr
        )
    print("The hub does not start with this configuration: fix the setting(s) above.", file=sys.stderr)
    raise SystemExit(1)


def _print(findings: Iterable[Finding]) -> None:
    rows = [("ok" if f.ok else "PROBLEM", f.what, f.detail + (f" -> {f.fix}" if f.fix and not f.ok else ""))
            for f in findings]  # fmt: skip
    width = max((len(r[1]) for r in rows), default=4)
    for status, what, detail in rows:
        print(f"{status:8s} {what:{width}s}  {detail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="libcloudspawner-check", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the hub's jupyterhub_config.py")
    p.add_argument("--offline", action="store_true", help="check the configuration only; ask the cloud nothing")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from traitlets.config import PyFileConfigLoader

    from .spawner import LibcloudSpawner

    directory, filename = os.path.split(os.path.abspath(args.config))
    try:
        config = PyFileConfigLoader(filename, path=directory).load_config()
        spawner = LibcloudSpawner(config=config)
    except (OSError, TraitError, ValueError) as e:
        _print([_problem("setting", e)])
        return 1
    hub = dict(config.get("JupyterHub", {}))
    findings = offline_findings(spawner) + hub_url_findings(hub) + internal_ssl_findings(hub, spawner)
    if not args.offline and all(f.ok for f in findings if f.what in ("credentials", "libcloud_provider")):
        findings += asyncio.run(cloud_findings(spawner))
    _print(findings)
    return 0 if all(f.ok for f in findings) else 1


if __name__ == "__main__":
    sys.exit(main())
