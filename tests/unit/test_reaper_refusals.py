"""The reaper fails closed: whenever it cannot be sure of the hub's servers it deletes nothing and says why.

The hub API is a tiny HTTP server on loopback answering what each case needs."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import pytest

from libcloudspawner import naming, reaper
from libcloudspawner.cloud import Instance
from libcloudspawner.reaper import REQUIRED_SCOPES, Refusal, hub_servers_from_api, reap_once

HUB = "hub-a"
OLD = "2026-01-01T00:00:00Z"
# what JupyterHub answers for a token of the documented role (expanded scopes)
GOOD_SCOPES = [*REQUIRED_SCOPES, "read:users", "read:users:groups"]


def user(name, servers=None):
    return {"name": name, "servers": servers if servers is not None else {}}


class FakeHubAPI:
    """``GET /hub/api/user`` answers ``scopes``; ``GET /hub/api/users`` pages through ``users`` (or ``pages``)."""

    def __init__(self):
        self.scopes = list(GOOD_SCOPES)
        self.users = [user("alice", {"": {"state": {"instance_id": "i1"}, "pending": None}}), user("bob")]
        self.status = 200
        self.pages = None  # a list of bodies to answer in turn instead of paging ``users``
        self.page_size = 1
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hub/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urlparse(self.path)
                if url.path == "/hub/api/user":
                    self.answer(200, {"name": "service-reaper", "kind": "service", "scopes": api.scopes})
                elif url.path == "/hub/api/users":
                    offset = int(parse_qs(url.query).get("offset", ["0"])[0])
                    self.answer(api.status, api.page(offset))
                else:
                    self.answer(404, {"message": "not found"})

            def answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler

    def page(self, offset):
        if self.pages is not None:
            return self.pages.pop(0)
        items = self.users[offset : offset + self.page_size]
        nxt = offset + self.page_size
        more = {"offset": nxt, "limit": self.page_size, "url": "..."} if nxt < len(self.users) else None
        return {"items": items, "_pagination": {"offset": offset, "limit": self.page_size, "total": len(self.users),
                                                "next": more}}  # fmt: skip


@pytest.fixture
def api():
    hub_api = FakeHubAPI()
    yield hub_api
    hub_api.server.shutdown()
    hub_api.server.server_close()


def test_a_complete_listing_is_read_across_pages(api):
    servers = hub_servers_from_api(api.url, "t")
    assert [(s.user, s.server, s.instance_id) for s in servers] == [("alice", "", "i1")]


def page(items, total, nxt=None):
    return {"items": items, "_pagination": {"offset": 0, "limit": 200, "total": total, "next": nxt}}


REFUSALS = [
    ("user without servers", lambda a: setattr(a, "users", [{"name": "alice"}]), "without its servers"),
    ("token without read:servers", lambda a: a.scopes.remove("read:servers"), r"lacks the scope\(s\) read:servers "),
    ("token without admin:server_state", lambda a: a.scopes.remove("admin:server_state"), "admin:server_state"),
    (
        "filtered scope",
        lambda a: setattr(a, "scopes", [*REQUIRED_SCOPES[:2], "read:servers!user=alice", "admin:server_state"]),
        "read:servers",
    ),
    ("token without scopes", lambda a: setattr(a, "scopes", []), "list:users"),
    ("HTTP error", lambda a: setattr(a, "status", 500), "answered 500"),
    ("no pagination", lambda a: setattr(a, "pages", [[user("alice")]]), "without pagination"),
    ("partial page", lambda a: setattr(a, "pages", [page([user("alice")], total=3)]), "announced 3 users but listed 1"),
    (
        "total changes between pages",
        lambda a: setattr(a, "pages", [page([user("a")], 2, {"offset": 1}), page([user("b")], 3)]),
        "changed",
    ),
    (
        "server without state",
        lambda a: setattr(a, "users", [user("alice", {"": {"pending": None}})]),
        "admin:server_state",
    ),
]


@pytest.mark.parametrize(("setup", "message"), [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS])
def test_the_reaper_refuses_what_it_cannot_trust(api, setup, message):
    setup(api)
    with pytest.raises(Refusal, match=message):
        hub_servers_from_api(api.url, "t")


def test_a_hub_that_does_not_answer_is_a_refusal(api):
    url = api.url
    api.server.shutdown()
    api.server.server_close()
    with pytest.raises(Refusal, match="did not answer"):
        hub_servers_from_api(url, "t", timeout_seconds=2)


class Cloud:
    def __init__(self, count):
        meta = naming.instance_tags(hub_id=HUB, username="ghost", servername="")
        self.nodes = {f"o{i}": Instance(id=f"o{i}", name=f"jupyter-o{i}", state="running", metadata=dict(meta),
                                        created=OLD) for i in range(count)}  # fmt: skip
        self.deleted: list[str] = []

    async def list_nodes(self):
        return list(self.nodes.values())

    async def destroy_node(self, node_id):
        self.deleted.append(node_id)

    async def call(self, method, *args, **kwargs):  # the port listing (ports.find_ports): no port
        return []


@pytest.mark.parametrize(("orphans", "cap", "deleted"), [(10, 10, 10), (11, 10, 0), (11, None, 11)],
                         ids=["at the cap", "over the cap: none", "--force"])  # fmt: skip
async def test_more_orphans_than_the_cap_deletes_none(orphans, cap, deleted):
    cloud = Cloud(orphans)
    if deleted == 0:
        with pytest.raises(Refusal, match="--force"):
            await reap_once(cloud, HUB, [], delete=True, min_age_seconds=900, max_deletions=cap)
    else:
        await reap_once(cloud, HUB, [], delete=True, min_age_seconds=900, max_deletions=cap)
    assert len(cloud.deleted) == deleted


def test_the_command_exits_2_and_deletes_nothing_on_a_refusal(api, monkeypatch, capsys):
    cloud = Cloud(1)
    api.scopes = ["list:users", "read:users:name"]  # e.g. a token of the role before admin:server_state
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "t")
    monkeypatch.setattr(reaper, "load_hub_config", lambda path: SimpleNamespace(hub_id=HUB, cloud=None,
                                                                                  hub_api_url=api.url))  # fmt: skip
    monkeypatch.setattr(reaper, "client_for", lambda settings: cloud)
    assert reaper.main(["--config", "hub.py", "--delete", "--hub-api-url", api.url]) == 2
    assert cloud.deleted == []
