"""`invoke build-image --builder openstack` hands Packer ids, resolved through the real cloud before Packer starts.

Packer's openstack builder takes a network only by its UUID (a name fails with "Bad networks format: network uuid
is not in proper format"). The pre-flight resolves a name or an id to the id. A name two items carry is refused
naming both ids: for images against Glance in test_publish.py; for networks in tests/unit (the dev cloud's
flat-only Neutron has room for one network). No VM is created here.
"""

from __future__ import annotations

import pytest

from devtools.images.publish import openstack_preflight

CLOUD = "devcloud"
FLAVOR = "j1.small"


@pytest.fixture
def flatnet(nova, facts):
    net = nova.network.find_network(facts["network"], ignore_missing=True)
    assert net is not None, f"the dev cloud has no network {facts['network']!r}"
    return net


@pytest.mark.parametrize("by", ["name", "id"])
def test_the_flat_network_by_name_or_by_id_gives_its_id(facts, image, flatnet, by):
    wanted = facts["network"] if by == "name" else flatnet.id
    build = openstack_preflight(CLOUD, image["image_name"], FLAVOR, wanted)
    assert build.network == flatnet.id


def test_the_source_image_and_the_flavor_are_given_by_id(nova, image):
    build = openstack_preflight(CLOUD, image["image_name"], FLAVOR, "")
    assert build.source_image == image["image_id"]
    assert build.flavor == nova.compute.find_flavor(FLAVOR, ignore_missing=False).id
    assert build.network is None
