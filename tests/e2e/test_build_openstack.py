"""`invoke build-image --builder openstack` hands Packer ids, resolved through the real cloud before Packer starts.

Packer's openstack builder takes a network only by its UUID: given `flatnet` it failed with "Bad networks format:
network uuid is not in proper format". The pre-flight resolves a name or an id to the id, and refuses a name two
networks carry. (No VM is created here; the two networks of the ambiguous case are deleted at the end.)
"""

from __future__ import annotations

import uuid

import pytest
from invoke import Exit

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


def test_a_network_name_two_networks_carry_is_refused_naming_both_ids(nova, image):
    name = f"lcs-e2e-twin-{uuid.uuid4().hex[:8]}"
    created = []
    try:
        for _ in range(2):
            try:
                created.append(nova.network.create_network(name=name))
            except Exception as e:  # openstacksdk raises several kinds; the message is what matters here
                pytest.fail(f"the dev cloud refused to create a network named {name!r}: {e}", pytrace=False)
        ids = ", ".join(sorted(n.id for n in created))
        with pytest.raises(Exit) as info:
            openstack_preflight(CLOUD, image["image_name"], FLAVOR, name)
        assert f"several networks are named {name!r} ({ids}): pass one by its id" in str(info.value.message)
    finally:
        for net in created:
            nova.network.delete_network(net, ignore_missing=True)
