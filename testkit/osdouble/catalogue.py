"""The images, flavors, networks, security groups, key pairs, project and user the double serves.

Two presets:

- ``default``: the small catalogue the hub tests use (images ``debian-12-jupyter`` / ``debian-12-base``,
  flavors ``m1.small`` 1 vCPU 2 GiB 20 GB, ``m1.medium``, ``m1.tiny`` whose 1 GB disk is smaller than the
  images, network ``flatnet``, project/user ``jupyter``/``secret``, region ``RegionOne``).
- ``recorded``: exactly the cloud of ``recordings/`` (same ids, names, sizes, dates), loaded from the
  recorded Glance, Nova and Neutron answers, so libcloud's results can be compared with ``calls.json``.

A catalogue is plain JSON-able data; ``PUT /_double/catalogue`` replaces parts of it.
"""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

RECORDINGS = Path(__file__).resolve().parent / "recordings"


DEFAULT_GROUP_ID = "5a1e0e6c-7d0f-4a43-9a0b-0d5c4b4e7c11"


def rule(
    direction: str,
    ethertype: str,
    protocol: str | None = None,
    port: int | None = None,
    remote_ip_prefix: str | None = None,
    remote_group_id: str | None = None,
) -> dict:
    """A Neutron security group rule, as ``GET /v2.0/security-groups`` lists it (ids added when served)."""
    return {
        "direction": direction,
        "ethertype": ethertype,
        "protocol": protocol,
        "port_range_min": port,
        "port_range_max": port,
        "remote_ip_prefix": remote_ip_prefix,
        "remote_group_id": remote_group_id,
    }


#: the rules Neutron gives every new group: any traffic out
EGRESS_RULES = (rule("egress", "IPv4"), rule("egress", "IPv6"))


def member_rules(group_id: str) -> list[dict]:
    """The project's ``default`` group also lets in anything from its own members (recorded on the dev cloud)."""
    return [rule("ingress", "IPv4", remote_group_id=group_id), rule("ingress", "IPv6", remote_group_id=group_id)]


def load_recording(name: str) -> dict[str, Any]:
    """One recorded exchange, e.g. ``load_recording("default-driver/005-POST-v2_1_servers-202.json")``."""
    return json.loads((RECORDINGS / name).read_text())


def recorded_calls(driver_dir: str) -> list[dict[str, Any]]:
    return json.loads((RECORDINGS / driver_dir / "calls.json").read_text())


def _image(name: str, size: int, virtual_size: int, image_id: str | None = None, **props: Any) -> dict[str, Any]:
    return {
        "id": image_id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"osdouble/image/{name}")),
        "name": name,
        "size": size,
        "virtual_size": virtual_size,
        "min_disk": 0,
        "min_ram": 0,
        "status": "active",
        "visibility": "public",
        "disk_format": "qcow2",
        "container_format": "bare",
        "checksum": uuid.uuid5(uuid.NAMESPACE_URL, f"osdouble/md5/{name}").hex,
        "owner": "03a8c754e2e3470c933adc5bb5e102b4",
        "created_at": "2026-11-25T20:43:43Z",
        "updated_at": "2026-11-25T20:43:47Z",
        "properties": {
            "os_distro": "debian",
            "os_version": "12",
            "owner_specified.openstack.md5": "",
            "owner_specified.openstack.sha256": "",
            "owner_specified.openstack.object": f"images/{name}",
            **props,
        },
        # users baked into the image besides the base system ones (User= in a unit may name them)
        "users": ["jupyter"] if "jupyter" in name else [],
    }


def _flavor(name: str, vcpus: int, ram: int, disk: int, flavor_id: str | None = None) -> dict[str, Any]:
    return {
        "id": flavor_id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"osdouble/flavor/{name}")),
        "name": name,
        "vcpus": vcpus,
        "ram": ram,
        "disk": disk,
        "ephemeral": 0,
        "swap": "",
        "disabled": False,
        "is_public": True,
        "rxtx_factor": 1.0,
    }


def _network(name: str, network_id: str | None = None) -> dict[str, Any]:
    nid = network_id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"osdouble/network/{name}"))
    return {
        "id": nid,
        "name": name,
        "subnets": [str(uuid.uuid5(uuid.NAMESPACE_URL, f"osdouble/subnet/{name}"))],
        "tenant_id": "03a8c754e2e3470c933adc5bb5e102b4",
        "shared": True,
        "status": "ACTIVE",
        "mtu": 1500,
        "created_at": "2026-11-25T20:18:34Z",
        "updated_at": "2026-11-25T20:18:35Z",
        "description": "",
    }


def _identity() -> dict[str, Any]:
    return {
        "region": "RegionOne",
        "domain": {"id": "default", "name": "Default"},
        "project": {"id": "4367fc0da28d4a87a2371eab09d8608a", "name": "jupyter"},
        "user": {"id": "5d39fa54e3c84f78b288a02fc83ea899", "name": "jupyter", "password": "secret"},
        "roles": [
            {"id": "4eabcf8e34354474aad433f11179ae28", "name": "reader"},
            {"id": "867001ec4bd04d368dcf2df99c272759", "name": "member"},
        ],
        # application credentials of the user above: {"id", "name", "secret"}
        "application_credentials": [
            {"id": "a5e0c8f3b2d44f1e9c7a6b5d4e3f2a10", "name": "jupyterhub", "secret": "appcred-secret"}
        ],
    }


def default_catalogue() -> dict[str, Any]:
    images = [
        _image("debian-12-jupyter", 1279524864, 8589934592, "c0990791-4a8c-4f15-abd2-864624cdf0d9"),
        _image("debian-12-base", 690552832, 4294967296, "07ad7780-80f9-400d-99d5-42c4f49035a6"),
    ]
    flavors = [
        _flavor("m1.tiny", 1, 256, 1, "0228243f-74a1-402b-87b3-6ea7f0989969"),
        _flavor("m1.small", 1, 2048, 20, "f5cff98b-13e2-474b-a465-773f0553a2c2"),
        _flavor("m1.medium", 2, 4096, 40, "13984572-547c-4181-8e0c-48f36a20282d"),
    ]
    return {
        "identity": _identity(),
        "images": images,
        "flavors": flavors,
        "networks": [_network("flatnet", "7f579703-d174-43d9-93ce-90102ab68207")],
        "security_groups": [
            {
                "id": DEFAULT_GROUP_ID,
                "name": "default",
                "description": "Default security group",
                "rules": [*EGRESS_RULES, *member_rules(DEFAULT_GROUP_ID)],
            },
        ],
        "keypairs": [],
        # Cinder's volume types (the dev cloud has only Cinder's own default type)
        "volume_types": [_volume_type("__DEFAULT__")],
        # Nova's quotas for the project (Nova's own defaults are 10 instances, 20 cores, 51200 MB: too
        # small for the 100-spawn benchmark, so the double is generous unless told otherwise)
        # and Cinder's (volumes, gigabytes)
        "quotas": {"instances": 500, "cores": 1000, "ram": 2048000, "volumes": 1000, "gigabytes": 100000},
        # what the "compute host" can fit; a flavor beyond it fails the build with NoValidHost
        "host": {"ram": 32768, "vcpus": 64, "disk": 1000},
    }


def _volume_type(name: str) -> dict[str, Any]:
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"osdouble/volume_type/{name}")), "name": name}


def recorded_catalogue() -> dict[str, Any]:
    """The cloud the recordings were made on, read from the recorded answers."""
    glance = load_recording("api-2.0/002-GET-v2_images-200.json")["response"]["body"]["json"]["images"]
    glance_fields = {
        "id",
        "name",
        "size",
        "virtual_size",
        "min_disk",
        "min_ram",
        "status",
        "visibility",
        "disk_format",
        "container_format",
        "checksum",
        "owner",
        "created_at",
        "updated_at",
        "protected",
        "os_hidden",
        "os_hash_algo",
        "os_hash_value",
        "tags",
        "self",
        "file",
        "schema",
    }
    images = []
    for g in glance:
        img = {k: g[k] for k in glance_fields if k in g and k not in ("self", "file", "schema")}
        img["properties"] = {k: v for k, v in g.items() if k not in glance_fields}
        img["users"] = ["jupyter"] if "jupyter" in g["name"] else []
        images.append(img)
    flavors = []
    nova_flavors = load_recording("default-driver/003-GET-v2_1_flavors_detail-200.json")
    for f in nova_flavors["response"]["body"]["json"]["flavors"]:
        fl = _flavor(f["name"], f["vcpus"], f["ram"], f["disk"], f["id"])
        fl["swap"] = f["swap"]
        fl["ephemeral"] = f["OS-FLV-EXT-DATA:ephemeral"]
        flavors.append(fl)
    networks = []
    for n in load_recording("api-2.0/006-GET-v2_0_networks-200.json")["response"]["body"]["json"]["networks"]:
        networks.append({k: v for k, v in n.items()})
    cat = default_catalogue()
    cat.update(images=images, flavors=flavors, networks=networks)
    # the recorded project had Nova's default RAM quota (the 403 message says "of 51200 ram"), and its
    # single compute host could not fit 48 GB (NoValidHost for e2e.novalidhost)
    # Cinder's quota of the dev cloud's project (devcloud/cloud.py VOLUME_QUOTA, a 32 GiB OSD)
    cat["quotas"] = {"instances": 10, "cores": 20, "ram": 51200, "volumes": 20, "gigabytes": 32}
    cat["host"] = {"ram": 16384, "vcpus": 8, "disk": 100}
    return cat


PRESETS = {"default": default_catalogue, "recorded": recorded_catalogue}


def preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise KeyError(f"unknown catalogue preset {name!r} (known: {', '.join(PRESETS)})")
    return copy.deepcopy(PRESETS[name]())


def normalise(part: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fill the defaults for catalogue entries given by tests (only ``name`` and sizes are needed)."""
    out = []
    for item in items:
        if part == "images":
            base = _image(item["name"], int(item.get("size", 1 << 30)), int(item.get("virtual_size", 8 << 30)))
        elif part == "flavors":
            base = _flavor(
                item["name"], int(item.get("vcpus", 1)), int(item.get("ram", 2048)), int(item.get("disk", 20))
            )
        elif part == "networks":
            base = _network(item["name"])
        elif part == "security_groups":
            base = {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"osdouble/sg/{item['name']}")),
                "name": item["name"],
                "description": "",
                "rules": list(EGRESS_RULES),
            }
        elif part == "volume_types":
            base = _volume_type(item["name"])
        elif part == "keypairs":
            base = {
                "name": item["name"],
                "public_key": "ssh-ed25519 AAAA osdouble",
                "fingerprint": "00:00:00:00",
                "type": "ssh",
            }
        else:
            raise KeyError(f"unknown catalogue part {part!r}")
        base.update(item)
        out.append(base)
    return out
