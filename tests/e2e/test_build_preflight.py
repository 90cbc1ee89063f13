"""`invoke build-image --builder openstack` checks the real cloud before Packer boots anything: a wrong
source image, flavor or network is one message naming the fix, not a Packer failure minutes later.
(No VM is created here; the openstack build itself is recorded in docs/images.md.)"""

from __future__ import annotations

import pytest
from invoke import Exit

from devtools.images.publish import openstack_preflight

CLOUD = "devcloud"


def test_the_dev_cloud_has_what_an_openstack_build_needs(facts, image):
    openstack_preflight(CLOUD, image["image_name"], "j1.small", facts["network"])


def test_every_missing_piece_is_named_in_one_message(facts):
    with pytest.raises(Exit) as e:
        openstack_preflight(CLOUD, "lcs-no-such-base", "x9.huge", "lcs-no-such-net")
    msg = str(e.value.message)
    assert "no image 'lcs-no-such-base' in Glance" in msg
    assert "image create --disk-format qcow2" in msg  # the fix
    assert "no flavor 'x9.huge'" in msg and "j1.small" in msg  # names the flavors there are
    assert "no network 'lcs-no-such-net'" in msg


def test_a_flavor_too_small_for_the_image_is_refused(image):
    with pytest.raises(Exit) as e:
        openstack_preflight(CLOUD, image["image_name"], "m1.tiny", "")
    assert "flavor 'm1.tiny' has a 1 GB disk; the image needs 8 GB" in str(e.value.message)


def test_an_unknown_cloud_entry_is_a_clear_error():
    with pytest.raises(Exit) as e:
        openstack_preflight("lcs-nowhere", "debian-12-base", "m1.small", "")
    assert "clouds.yaml entry 'lcs-nowhere'" in str(e.value.message)
