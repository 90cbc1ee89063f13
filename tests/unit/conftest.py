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


@pytest.fixture(scope="module")
def volume_double(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DoubleHandle]:
    """A double for the block-storage tests: stand-in instances (nothing runs in them), short phases; each
    volume phase long enough for a poll to see it on a loaded machine."""
    volume_phases = {f"volume_{phase}_s": 0.3 for phase in ("creating", "attaching", "detaching", "deleting")}
    with running_double(tmp_path_factory.mktemp("volumes"), no_run=True, scheduling_s=0.1, spawning_s=0.1,
                        delete_linger_s=0.3, **volume_phases) as handle:  # fmt: skip
        yield handle


@pytest.fixture
def volume_cloud(volume_double: DoubleHandle) -> DoubleHandle:
    """The block-storage double reset to how it started."""
    volume_double.client.reset(config=True, catalogue=True)
    return volume_double
