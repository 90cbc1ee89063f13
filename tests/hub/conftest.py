"""Fixtures of the hub tier (helpers in ``testkit/hub.py``)."""

from __future__ import annotations

import pytest

from testkit.hub import PASSWORD
from testkit.osdouble.fixture import running_double


@pytest.fixture(scope="module")
def double(tmp_path_factory):
    with running_double(tmp_path_factory.mktemp("double"), scheduling_s=0.3, spawning_s=0.5, delete_linger_s=0.5) as d:
        identity = d.client.catalogue()["identity"]
        identity["user"]["password"] = PASSWORD
        d.client.set_catalogue(identity=identity)
        yield d
