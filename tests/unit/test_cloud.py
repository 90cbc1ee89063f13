"""cloud.py against a fake libcloud driver: executor, timeouts, backoff, no blind create retry, caches."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest
from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError

from libcloudspawner.cloud import (
    CloudAmbiguous,
    CloudClient,
    CloudError,
    CloudNotFound,
    CreateOutcomeUnknown,
    classify,
)
from libcloudspawner.settings import CloudSettings


class FakeDriver:
    """Answers from a script: a list of results/exceptions per method; records calls and threads."""

    def __init__(self, script, log):
        self.script = script
        self.log = log
        self.busy = threading.Lock()

    def __getattr__(self, method):
        def call(*args, **kwargs):
            assert self.busy.acquire(blocking=False), "a driver was used by two threads at once"
            try:
                self.log.append((method, threading.get_ident()))
                outcome = self.script[method].pop(0) if len(self.script[method]) > 1 else self.script[method][0]
                if isinstance(outcome, float):
                    time.sleep(outcome)
                    return []
                if isinstance(outcome, BaseException):
                    raise outcome
                return outcome
            finally:
                self.busy.release()

        return call


def node(node_id="n1", name="jupyter-alice", state="running", ips=("10.0.0.5",), metadata=None):
    return SimpleNamespace(
        id=node_id, name=name, state=state, private_ips=list(ips), public_ips=[],
        extra={"metadata": metadata or {}, "task_state": None},
    )  # fmt: skip


# make_client's short names -> CloudSettings fields
SETTING = {"timeout_seconds": "api_timeout_seconds", "retries": "api_retries", "max_workers": "api_max_workers",
           "backoff_base_seconds": "api_backoff_base_seconds", "backoff_max_seconds": "api_backoff_max_seconds",
           "cache_ttl_seconds": "api_cache_ttl_seconds", "provider": "libcloud_provider"}  # fmt: skip


def make_client(script, **kw):
    log, drivers = [], []

    def factory():
        drivers.append(FakeDriver(script, log))
        return drivers[-1]

    settings = {"timeout_seconds": 2.0, "retries": 3, "backoff_base_seconds": 0.01, "backoff_max_seconds": 0.05}
    settings.update(kw)
    client = CloudClient(factory, CloudSettings(**{SETTING[k]: v for k, v in settings.items()}))
    return client, log, drivers


def http_error(code, headers=None):
    return BaseHTTPError(code, f"{code} error", headers)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (http_error(500), True),
        (http_error(503), True),
        (RateLimitReachedError(headers={"retry-after": "1"}), True),
        (http_error(413, {"retry-after": "2"}), True),
        (http_error(413), False),
        (http_error(400), False),
        (http_error(403), False),
        (http_error(404), False),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (ValueError("bad"), False),
    ],
)
def test_classify(exc, transient):
    assert classify(exc)[0] is transient


async def test_transient_errors_are_retried_then_succeed():
    client, log, _ = make_client({"list_sizes": [http_error(503), http_error(502), ["small"]]})
    assert await client.call("list_sizes") == ["small"]
    assert [m for m, _ in log] == ["list_sizes"] * 3


async def test_client_errors_are_not_retried():
    client, log, _ = make_client({"list_sizes": [http_error(400)]})
    with pytest.raises(CloudError) as info:
        await client.call("list_sizes")
    assert not info.value.transient and info.value.status == 400
    assert len(log) == 1


async def test_retry_budget_is_bounded():
    client, log, _ = make_client({"list_sizes": [http_error(500)]}, retries=2)
    with pytest.raises(CloudError) as info:
        await client.call("list_sizes")
    assert info.value.transient
    assert len(log) == 3


async def test_retry_after_is_honoured():
    client, _, _ = make_client({"list_sizes": [RateLimitReachedError(headers={"retry-after": "0.3"}), ["ok"]]})
    started = time.monotonic()
    assert await client.call("list_sizes") == ["ok"]
    assert time.monotonic() - started >= 0.3


async def test_401_reauthenticates_once():
    client, log, _ = make_client({"list_sizes": [http_error(401), http_error(401), ["ok"]]})
    with pytest.raises(CloudError) as info:
        await client.call("list_sizes")
    assert info.value.status == 401
    assert len(log) == 2


async def test_each_call_has_a_deadline():
    client, _, _ = make_client({"list_sizes": [0.5]}, timeout_seconds=0.1, retries=1)
    started = time.monotonic()
    with pytest.raises(CloudError) as info:
        await client.call("list_sizes")
    assert info.value.transient
    assert time.monotonic() - started < 0.45


@pytest.mark.parametrize("failure", [http_error(500), http_error(504), ConnectionResetError()])
async def test_create_is_never_blindly_retried(failure):
    client, log, _ = make_client({"create_node": [failure, node()]})
    with pytest.raises(CreateOutcomeUnknown):
        await client.create_node({"name": "x"})
    assert [m for m, _ in log] == ["create_node"]


async def test_create_refused_is_a_plain_error():
    client, _, _ = make_client({"create_node": [http_error(403)]})
    with pytest.raises(CloudError) as info:
        await client.create_node({"name": "x"})
    assert not isinstance(info.value, CreateOutcomeUnknown)
    assert info.value.status == 403


async def test_create_timeout_is_unknown_and_trackable():
    sent = []
    client, _, _ = make_client({"create_node": [0.3]}, timeout_seconds=0.1)
    with pytest.raises(CreateOutcomeUnknown):
        await client.create_node({"name": "x"}, on_sent=sent.append)
    assert len(sent) == 1
    await asyncio.wrap_future(sent[0])  # the request ran to its end in its thread


async def test_lookups_are_cached_and_shared():
    image = SimpleNamespace(id="img-1", name="debian")
    client, log, _ = make_client({"list_images": [[image]]})
    results = await asyncio.gather(*(client.image("debian") for _ in range(20)), client.image("img-1"))
    assert all(r is image for r in results)
    assert [m for m, _ in log] == ["list_images"]


async def test_unknown_image_refreshes_once_then_fails():
    client, log, _ = make_client({"list_images": [[SimpleNamespace(id="1", name="a")]]})
    await client.image("a")
    client._cache["images"] = (time.monotonic() - 60, client._cache["images"][1])
    with pytest.raises(CloudNotFound):
        await client.image("nope")
    assert len(log) == 2


async def test_a_name_shared_by_two_images_is_refused_not_guessed():
    # Glance allows duplicate names; a project member's upload must not be booted in place of the admin's image
    twins = [SimpleNamespace(id="img-a", name="debian"), SimpleNamespace(id="img-b", name="debian")]
    client, log, _ = make_client({"list_images": [twins, twins]})
    with pytest.raises(CloudAmbiguous) as info:
        await client.image("debian")
    assert str(info.value) == "the cloud has 2 images named 'debian' (img-a, img-b): configure one by its id"
    assert isinstance(info.value, CloudNotFound) and info.value.status == 409
    assert (await client.image("img-b")).id == "img-b"  # by id it is unambiguous
    assert len(log) == 1  # the fresh listing was moments old: no third call


async def test_a_duplicate_gone_on_the_fresh_listing_is_not_an_error():
    twins = [SimpleNamespace(id="img-a", name="debian"), SimpleNamespace(id="img-b", name="debian")]
    client, log, _ = make_client({"list_images": [twins, twins[1:]]})
    await client.image("img-a")
    client._cache["images"] = (time.monotonic() - 60, twins)  # a listing from before the duplicate was deleted
    assert (await client.image("debian")).id == "img-b"
    assert len(log) == 2


async def test_one_driver_per_thread():
    client, log, drivers = make_client({"list_sizes": [0.02]}, max_workers=4)
    await asyncio.gather(*(client.call("list_sizes") for _ in range(16)))
    assert len(drivers) == len({t for _, t in log}) <= 4


async def test_a_driver_is_rebuilt_after_an_error_without_an_http_answer():
    # a connection error may leave libcloud half logged in (see test_cloud_real_driver.py): next call, new driver
    client, _, drivers = make_client({"list_sizes": [ConnectionResetError(), http_error(500), ["ok"]]}, max_workers=1)
    assert await client.call("list_sizes") == ["ok"]
    assert len(drivers) == 2  # rebuilt after the reset, kept after the 500 (the cloud answered)


async def test_find_nodes_matches_name_and_tags():
    tags = {"jupyterhub-user": "alice"}
    listing = [
        node("1", metadata=tags),
        node("2", metadata={"jupyterhub-user": "bob"}),
        node("3", name="other", metadata=tags),
    ]
    client, _, _ = make_client({"list_nodes": [listing]}, provider="ec2")
    assert [i.id for i in await client.find_nodes(name="jupyter-alice", tags=tags)] == ["1"]


async def test_find_nodes_asks_nova_to_filter_by_name():
    requests = []

    class Connection:
        def request(self, path, params=None):
            requests.append((path, params))
            return SimpleNamespace(object={"servers": []})

    driver = SimpleNamespace(connection=Connection(), _to_nodes=lambda obj: [node("1", metadata={"k": "v"})])
    client = CloudClient(lambda: driver, CloudSettings(api_timeout_seconds=2.0))
    assert [i.id for i in await client.find_nodes(name="jupyter-alice", tags={"k": "v"})] == ["1"]
    assert requests == [("/servers/detail", {"name": "^jupyter-alice$"})]


async def test_destroy_404_is_success():
    client, log, _ = make_client({"destroy_node": [http_error(404)]})
    await client.destroy_node("gone")
    assert len(log) == 1


async def test_loop_stays_free_during_slow_calls():
    """The driver call can only finish once the event loop has run a callback: true only off the loop."""
    client, _, _ = make_client({}, max_workers=2)
    loop_ran = threading.Event()

    def blocking_call(driver):
        if not loop_ran.wait(timeout=10):
            raise AssertionError("the event loop was blocked while the cloud call ran")
        return "done"

    asyncio.get_running_loop().call_later(0.05, loop_ran.set)
    assert await asyncio.gather(client.call(blocking_call), client.call(blocking_call)) == ["done", "done"]


def test_backoff_grows_with_jitter_and_cap():
    client, _, _ = make_client({}, backoff_base_seconds=1.0, backoff_max_seconds=8.0)
    for attempt, cap in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 8.0)]:
        delays = [client.backoff_seconds(attempt) for _ in range(50)]
        assert all(cap / 2 <= d <= cap for d in delays)
    assert client.backoff_seconds(0, retry_after=5) == 5
