"""Fixtures shared by the unit tests that talk to the OpenStack API double over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.osdouble.fixture import DoubleHandle, running_double


@pytest.fixture(scope="module")
def double(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DoubleHandle]:
    """One double per test module (a module may define its own ``double`` with other settings)."""
    # phases long enough that a poll every 50 ms sees each one even on a loaded machine
    with running_double(tmp_path_factory.mktemp("api"), scheduling_s=1.0, spawning_s=1.0,
                        delete_linger_s=1.0) as handle:  # fmt: skip
        yield handle


@pytest.fixture
def recorded(double: DoubleHandle) -> DoubleHandle:
    """The double reset to the cloud of the recordings (same ids)."""
    double.client.reset(config=True)
    double.client.set_catalogue(preset="recorded")
    return double


@pytest.fixture
def default(double: DoubleHandle) -> DoubleHandle:
    """The double reset to its default catalogue."""
    double.client.reset(config=True)
    double.client.set_catalogue(preset="default")
    return double
