"""A fake cloud client for LibcloudSpawner's unit tests (the ``cloud`` and ``spawner`` fixtures in conftest.py)."""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace

from libcloudspawner.cloud import CloudNotFound, CreateOutcomeUnknown, Instance


class FakeCloud:
    """In-memory instances; every method counts its calls. ``create_delay`` holds creates."""

    timeout_seconds = 1.0

    def __init__(self):
        self.nodes: dict[str, Instance] = {}
        self.calls: list[str] = []
        self.ids = itertools.count(1)
        self.create_delay = 0.0
        self.create_error: Exception | None = None
        self.get_error: Exception | None = None
        self.boot_state = "running"
        self.key_pairs = {"ops"}
        self.security_groups = {"jupyter"}
        # the next creates: seconds after which the cloud holds the instance although the request answered
        # "outcome unknown" at once (Nova still working after the client gave up); or an exception to raise
        self.next_creates: list[float | Exception] = []

    async def image(self, name):
        self.calls.append("image")
        return SimpleNamespace(id=name, name=name)

    async def size(self, name):
        self.calls.append("size")
        return SimpleNamespace(id=name, name=name)

    async def network(self, name):
        self.calls.append("network")
        return SimpleNamespace(id=name, name=name)

    async def key_pair(self, name):
        self.calls.append("key_pair")
        if name not in self.key_pairs:
            raise CloudNotFound(f"the cloud has no key pair {name!r}", status=404)
        return SimpleNamespace(name=name)

    async def security_group(self, name):
        self.calls.append("security_group")
        if name not in self.security_groups:
            raise CloudNotFound(f"the cloud has no security group {name!r}", status=404)
        return SimpleNamespace(id=name, name=name)

    async def find_nodes(self, *, name, tags):
        self.calls.append("find_nodes")
        return [
            n for n in self.nodes.values() if n.name == name and all(n.metadata.get(k) == v for k, v in tags.items())
        ]

    async def create_node(self, request, *, on_sent=None):
        self.calls.append("create_node")
        name, ex_metadata = request["name"], request["ex_metadata"]
        if self.next_creates:
            plan = self.next_creates.pop(0)
            if isinstance(plan, Exception):
                raise plan
            late = Instance(id=f"id-{next(self.ids)}", name=name, state=self.boot_state, private_ips=("10.0.0.9",),
                            metadata=dict(ex_metadata))  # fmt: skip
            asyncio.get_running_loop().call_later(plan, self.nodes.__setitem__, late.id, late)
            raise CreateOutcomeUnknown("create instance: no answer within 1s", transient=True)
        node = Instance(id=f"id-{next(self.ids)}", name=name, state=self.boot_state, private_ips=("10.0.0.9",),
                        metadata=dict(ex_metadata))  # fmt: skip
        self.nodes[node.id] = node  # the cloud has it, whatever happens to the answer
        await asyncio.sleep(self.create_delay)
        if self.create_error is not None:
            raise self.create_error
        return node

    async def list_nodes(self):
        self.calls.append("list_nodes")
        if self.get_error is not None:
            raise self.get_error
        return list(self.nodes.values())

    async def get_node(self, node_id, retries=None):
        self.calls.append("get_node")
        if self.get_error is not None:
            raise self.get_error
        return self.nodes.get(node_id)

    async def destroy_node(self, node_id):
        self.calls.append("destroy_node")
        self.nodes.pop(node_id, None)

    async def update_metadata(self, node_id, metadata):
        self.calls.append("update_metadata")
        node = self.nodes[node_id]
        self.nodes[node_id] = Instance(**{**node.__dict__, "metadata": {**node.metadata, **metadata}})

    async def fault_message(self, node_id):
        return "No valid host was found."
