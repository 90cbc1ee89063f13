"""Fixtures shared by the unit tests: the OpenStack API double over HTTP, and a LibcloudSpawner on a fake client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from libcloudspawner.provision import Provisioner
from libcloudspawner.spawner import LibcloudSpawner
from testkit.osdouble.fixture import DoubleHandle, running_double
from tests.unit.spawner_fake import FakeCloud


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


# A LibcloudSpawner on a fake cloud client (tests/unit/spawner_fake.py): no hub database, instant readiness.
@pytest.fixture
def cloud():
    return FakeCloud()


@pytest.fixture
def spawner(cloud, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no hub database: the hub's files go to the working directory
    s = LibcloudSpawner(
        user=SimpleNamespace(name="alice", url="/user/alice/", escaped_name="alice"),
        userserver_sizes=[("Small", "m1.small")],
        userserver_images=[("Debian", "debian-12-jupyter")],
        userserver_net="flatnet",
        hub_id="unit",
        startup_poll_interval_seconds=0.01,
        stop_timeout_seconds=2,
        start_timeout=600,
    )
    monkeypatch.setattr(s, "_client", lambda: cloud)
    monkeypatch.setattr(s, "_render_userdata", lambda: "#cloud-config\n")
    s.http_ready = asyncio.Event()
    s.http_ready.set()

    async def wait_http(provisioner, instance_id, url, ssl_context=None):
        await s.http_ready.wait()

    monkeypatch.setattr(Provisioner, "wait_http", wait_http)
    return s
