"""The create request as data: what a spawn asks the cloud for, read without a cloud."""

from __future__ import annotations

import pytest

from libcloudspawner.requests import create_request

TAGS = {"jupyterhub-user": "alice", "jupyterhub-hub-id": "hub-a"}
BASE = dict(name="jupyter-alice", image="IMG", size="SIZE", networks=["NET"], user_data="#cloud-config\n", tags=TAGS)


@pytest.mark.parametrize(
    ("extra", "key", "expected"),
    [
        ({}, "ex_metadata", TAGS),
        ({"extra_metadata": {"course": "m101"}}, "ex_metadata", {"course": "m101", **TAGS}),
        ({"extra_metadata": {"jupyterhub-user": "mallory"}}, "ex_metadata", TAGS),
        ({}, "ex_config_drive", True),
        ({"config_drive": False}, "ex_config_drive", False),
        ({"key_name": "ops"}, "ex_keyname", "ops"),
        ({"security_groups": ("jupyter",)}, "security_groups", ["jupyter"]),
        ({}, "networks", ["NET"]),
        ({}, "ex_userdata", "#cloud-config\n"),
    ],
)
def test_create_request_fields(extra, key, expected):
    assert create_request(**BASE, **extra)[key] == expected


@pytest.mark.parametrize("absent", ["ex_keyname", "security_groups"])
def test_optional_fields_are_left_out_when_unset(absent):
    assert absent not in create_request(**BASE)
