"""The durable list of deletions: where it lives, what survives a restart, retries until the cloud says gone."""

from __future__ import annotations

import asyncio
import logging

import pytest

from libcloudspawner import deletions
from libcloudspawner.cloud import CloudError, Instance

log = logging.getLogger("test")


class FlakyCloud:
    """DELETE fails ``failures`` times, then deletes."""

    def __init__(self, ids, failures):
        self.nodes = {i: Instance(id=i, name=f"vm-{i}", state="running") for i in ids}
        self.failures = failures
        self.deletes = 0

    async def destroy_node(self, node_id):
        self.deletes += 1
        if self.failures > 0:
            self.failures -= 1
            raise CloudError("delete instance failed: 500", transient=True, status=500)
        self.nodes.pop(node_id, None)

    async def get_node(self, node_id, retries=None):
        return self.nodes.get(node_id)


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setattr(deletions, "RETRY_FIRST_SECONDS", 0.02)


async def test_a_recorded_deletion_is_retried_until_gone(tmp_path):
    cloud = FlakyCloud(["a"], failures=3)
    record = deletions.for_directory(tmp_path)
    record.record("a", "vm-a", "alice", cloud, log)
    assert (tmp_path / deletions.FILE_NAME).exists()
    await asyncio.wait_for(record.task, 5)
    assert cloud.nodes == {} and cloud.deletes == 4
    assert record.entries() == []


async def test_the_record_survives_a_restart(tmp_path):
    deletions.DurableDeletions(tmp_path / deletions.FILE_NAME).add("b", "vm-b", "bob")
    cloud = FlakyCloud(["b", "other"], failures=0)
    restarted = deletions.DurableDeletions(tmp_path / deletions.FILE_NAME)  # a new hub process
    restarted.resume(cloud, log)
    await asyncio.wait_for(restarted.task, 5)
    assert list(cloud.nodes) == ["other"]  # only what was recorded


async def test_an_instance_already_gone_counts_as_deleted(tmp_path):
    cloud = FlakyCloud([], failures=0)
    record = deletions.DurableDeletions(tmp_path / deletions.FILE_NAME)
    record.record("gone", "vm-gone", "carol", cloud, log)
    await asyncio.wait_for(record.task, 5)
    assert record.pending_ids() == set()


def test_one_record_per_hub_per_process(tmp_path):
    assert deletions.for_directory(tmp_path) is deletions.for_directory(tmp_path / ".")
    assert deletions.for_directory(tmp_path) is not deletions.for_directory(tmp_path / "other")
