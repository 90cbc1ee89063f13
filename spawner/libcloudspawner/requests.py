"""The create request of a user's instance, as plain data (pure: no libcloud, no spawner).

Like KubeSpawner's ``objects.make_pod``: everything the spawner decided (name, image, size, network, user-data,
tags) goes in, the keyword arguments of the driver's ``create_node`` come out, so that a test can read the
request a spawn would send without a cloud.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def create_request(
    *,
    name: str,
    image: Any,
    size: Any,
    networks: Sequence[Any],
    user_data: str,
    tags: Mapping[str, str],
    extra_metadata: Mapping[str, str] | None = None,
    config_drive: bool = True,
    key_name: str | None = None,
    security_groups: Sequence[str] = (),
    volume_ids: Sequence[str] = (),
    port_id: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``create_node`` (``image``, ``size`` and ``networks`` are the cloud's objects).

    The spawner's tags win over administrator metadata of the same key (the traits refuse such keys anyway).
    ``volume_ids`` are attached at boot (Nova's ``block_device_mapping_v2``, after the image's own root disk),
    never deleted with the instance: the disk is there when cloud-init runs. With ``port_id`` (a Neutron port
    created first) the instance is booted on that port: no network and no security group of its own (the
    port's apply).
    """
    request: dict[str, Any] = {
        "name": name,
        "size": size,
        "image": image,
        "networks": list(networks),
        "ex_userdata": user_data,
        "ex_metadata": {**(extra_metadata or {}), **tags},
        "ex_config_drive": config_drive,
    }
    if key_name:
        request["ex_keyname"] = key_name
    if port_id:
        request["port_id"] = port_id
        request["networks"] = []
    elif security_groups:
        request["security_groups"] = list(security_groups)
    if volume_ids:
        image_id = getattr(image, "id", image)
        root = {"boot_index": 0, "uuid": image_id, "source_type": "image", "destination_type": "local",
                "delete_on_termination": True}  # fmt: skip
        volumes = [
            {"boot_index": -1, "uuid": v, "source_type": "volume", "destination_type": "volume",
             "delete_on_termination": False}
            for v in volume_ids
        ]  # fmt: skip
        request["ex_blockdevicemappings"] = [root, *volumes]
    return request
