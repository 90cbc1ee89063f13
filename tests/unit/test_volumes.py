"""volumes.py (home volumes) against a fake cloud client: names and tags, ensure, attach, detach,
delete_forever. The same flows against the API double and the real libcloud driver are in
test_volumes_double.py."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest

from libcloudspawner import errors
from libcloudspawner.cloud import CloudError, CreateOutcomeUnknown, Volume
from libcloudspawner.naming import TAG_SERVER_NAME, TAG_USER, TAG_VOLUME, instance_name, tags_match, volume_name
from libcloudspawner.volumes import HomeVolumeError, HomeVolumes, HomeVolumeSettings, home_volume_ref

SERVER, OTHER = "server-1", "server-2"
REF = home_volume_ref("jupyter-home-{username}", hub_id="hub", username="alice", servername="")


class FakeCloud:
    """Volumes in memory. Each ``get_volume`` of a volume takes the next step of its plan (status, attached
    servers); an empty plan leaves it as it is. ``fail`` makes the next call of a method raise."""

    timeout_seconds = 0.05

    def __init__(self) -> None:
        self.volumes: dict[str, Volume] = {}
        self.plans: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        self.fail: dict[str, BaseException] = {}
        self.calls: list[tuple[str, Any]] = []
        self.attach_result = "in-use"  # where an attach ends: "available" = the compute host gave up

    def add(self, vid: str, status: str = "available", attached_to: tuple[str, ...] = (), ref=REF, **kw) -> Volume:
        self.volumes[vid] = Volume(id=vid, name=ref.name, size_gib=10, status=status, metadata=dict(ref.tags),
                                   attached_to=attached_to, **kw)  # fmt: skip
        return self.volumes[vid]

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if name in self.fail:
            raise self.fail.pop(name)

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    async def find_volumes(self, *, name, tags):
        self._call("find_volumes", name)
        return [v for v in self.volumes.values() if v.name == name and tags_match(v.metadata, tags)]

    async def create_volume(self, name, size_gib, *, volume_type=None, metadata):
        self._call("create_volume", name, size_gib, volume_type)
        vid = f"vol-{len(self.volumes) + 1}"
        self.volumes[vid] = Volume(id=vid, name=name, size_gib=size_gib, status="creating", metadata=dict(metadata))
        self.plans[vid] = [("available", ())]
        return self.volumes[vid]

    async def get_volume(self, vid):
        self._call("get_volume", vid)
        if vid not in self.volumes:
            return None
        plan = self.plans.get(vid)
        if plan:
            status, servers = plan.pop(0)
            self.volumes[vid] = replace(self.volumes[vid], status=status, attached_to=servers)
        return self.volumes[vid]

    async def attach_volume(self, server_id, vid):
        self._call("attach_volume", server_id, vid)
        self.volumes[vid] = replace(self.volumes[vid], status="attaching")
        ends = (server_id,) if self.attach_result == "in-use" else ()
        self.plans[vid] = [("attaching", ()), (self.attach_result, ends)]
        return "/dev/vdb"

    async def detach_volume(self, server_id, vid):
        self._call("detach_volume", server_id, vid)
        self.volumes[vid] = replace(self.volumes[vid], status="detaching")
        self.plans.setdefault(vid, []).append(("available", ()))
        return True

    async def delete_volume(self, vid):
        self._call("delete_volume", vid)
        self.volumes.pop(vid)


def homes(cloud: FakeCloud, reports: list[str] | None = None, **kw: Any) -> HomeVolumes:
    settings = {"poll_interval_seconds": 0.001, "create_timeout_seconds": 0.2, "attach_timeout_seconds": 0.2,
                "detach_timeout_seconds": 0.2, **kw}  # fmt: skip
    return HomeVolumes(cloud, HomeVolumeSettings(**settings), log=logging.getLogger("test"),  # type: ignore[arg-type]
                       log_name="alice", report=(reports.append if reports is not None else None))  # fmt: skip


# ---------------------------------------------------------------------------------------- names and tags


@pytest.mark.parametrize(
    ("template", "username", "servername", "expected"),
    [
        ("jupyter-home-{username}", "alice", "", "jupyter-home-alice"),
        ("jupyter-home-{username}", "alice", "gpu", "jupyter-home-alice"),  # per user: servers share it
        ("home-{username}--{servername}", "alice", "gpu", "home-alice--gpu"),
    ],
)
def test_volume_name(template: str, username: str, servername: str, expected: str) -> None:
    assert volume_name(template, username=username, servername=servername) == expected


def test_per_server_volume_of_the_default_server_is_named_like_its_instance() -> None:
    template = "home-{username}--{servername}"
    assert volume_name(template, username="alice") == instance_name(template, username="alice")


def test_volume_name_of_an_unsafe_user_is_escaped_and_hashed() -> None:
    name = volume_name("jupyter-home-{username}", username="Al/ice")
    assert (
        name.startswith("jupyter-home-al-ice"),
        name == volume_name("jupyter-home-{username}", username="al-ice"),
    ) == (True, False)


def test_volume_name_template_must_name_the_user() -> None:
    with pytest.raises(ValueError, match="home_volume_name_template"):
        volume_name("shared-home", username="alice")


@pytest.mark.parametrize(
    ("template", "servername", "server_tag"),
    [("jupyter-home-{username}", "gpu", ""), ("home-{username}--{servername}", "gpu", "gpu")],
)
def test_ref_tags_name_the_server_only_when_the_template_does(template: str, servername: str,
                                                              server_tag: str) -> None:  # fmt: skip
    ref = home_volume_ref(template, hub_id="hub", username="alice", servername=servername)
    assert (ref.tags[TAG_USER], ref.tags[TAG_SERVER_NAME], ref.tags[TAG_VOLUME]) == ("alice", server_tag, "home")


# ---------------------------------------------------------------------------------------- ensure


async def test_ensure_finds_the_existing_volume_and_creates_nothing() -> None:
    cloud = FakeCloud()
    cloud.add("vol-a")
    assert (await homes(cloud).ensure(REF)).id == "vol-a"
    assert "create_volume" not in cloud.names()


async def test_ensure_creates_one_and_waits_until_available() -> None:
    cloud, reports = FakeCloud(), []
    volume = await homes(cloud, reports, size_gib=5, volume_type="ssd").ensure(REF)
    assert (volume.status, cloud.calls[1]) == ("available", ("create_volume", (REF.name, 5, "ssd")))
    assert reports == ["Creating your home volume (5 GiB)"]


async def test_ensure_refuses_two_volumes_rather_than_guessing() -> None:
    cloud = FakeCloud()
    cloud.add("vol-a")
    cloud.add("vol-b")
    with pytest.raises(HomeVolumeError) as err:
        await homes(cloud).ensure(REF)
    assert (err.value.reason, "vol-a, vol-b" in str(err.value)) == ("duplicate", True)


async def test_ensure_ignores_another_users_volume_of_the_same_name() -> None:
    cloud = FakeCloud()
    bob = home_volume_ref("jupyter-home-{username}", hub_id="hub", username="bob", servername="")
    cloud.add("vol-bob", ref=type(bob)(name=REF.name, tags=bob.tags))
    volume = await homes(cloud).ensure(REF)
    assert volume.id != "vol-bob"


async def test_ensure_of_a_volume_in_error_is_a_clear_error() -> None:
    cloud = FakeCloud()
    cloud.add("vol-a", status="error")
    with pytest.raises(HomeVolumeError) as err:
        await homes(cloud).ensure(REF)
    assert (err.value.reason, err.value.volume_id) == ("error", "vol-a")


async def test_ensure_adopts_a_volume_whose_create_answer_was_lost() -> None:
    cloud = FakeCloud()

    async def lost(name, size_gib, *, volume_type=None, metadata):
        cloud.calls.append(("create_volume", (name,)))
        cloud.add("vol-landed", status="creating")
        cloud.plans["vol-landed"] = [("available", ())]
        raise CreateOutcomeUnknown("create volume: 503", transient=True)

    cloud.create_volume = lost  # type: ignore[method-assign]
    volume = await homes(cloud).ensure(REF)
    assert (volume.id, volume.status, cloud.names().count("create_volume")) == ("vol-landed", "available", 1)


async def test_ensure_creates_again_once_when_nothing_landed() -> None:
    cloud = FakeCloud()
    cloud.fail["create_volume"] = CreateOutcomeUnknown("timeout", transient=True)
    volume = await homes(cloud).ensure(REF)
    assert (volume.status, cloud.names().count("create_volume")) == ("available", 2)


# ---------------------------------------------------------------------------------------- attach


async def test_attach_waits_until_in_use() -> None:
    cloud, reports = FakeCloud(), []
    cloud.add("vol-a")
    volume = await homes(cloud, reports).attach("vol-a", SERVER)
    assert (volume.status, volume.attached_to, reports) == ("in-use", (SERVER,), ["Attaching your home volume"])


async def test_attach_to_the_server_it_is_on_makes_no_call() -> None:
    cloud = FakeCloud()
    cloud.add("vol-a", status="in-use", attached_to=(SERVER,))
    await homes(cloud).attach("vol-a", SERVER)
    assert "attach_volume" not in cloud.names()


@pytest.mark.parametrize(
    ("status", "attached_to", "reason"),
    [
        ("in-use", (OTHER,), "attached-elsewhere"),
        ("error", (), "error"),
        ("error_extending", (), "error"),
    ],
)
async def test_attach_refusals(status: str, attached_to: tuple[str, ...], reason: str) -> None:
    cloud = FakeCloud()
    cloud.add("vol-a", status=status, attached_to=attached_to)
    with pytest.raises(HomeVolumeError) as err:
        await homes(cloud).attach("vol-a", SERVER)
    assert (err.value.reason, "attach_volume" in cloud.names()) == (reason, False)


async def test_attach_the_host_gave_up_is_attach_failed() -> None:
    cloud = FakeCloud()
    cloud.add("vol-a")
    cloud.attach_result = "available"
    with pytest.raises(HomeVolumeError) as err:
        await homes(cloud).attach("vol-a", SERVER)
    assert err.value.reason == "attach-failed"


async def test_attach_waits_for_a_previous_detach() -> None:
    cloud, reports = FakeCloud(), []
    cloud.add("vol-a", status="detaching", attached_to=(OTHER,))
    cloud.plans["vol-a"] = [("detaching", (OTHER,)), ("detaching", (OTHER,)), ("available", ())]
    volume = await homes(cloud, reports).attach("vol-a", SERVER)
    assert (volume.attached_to, reports[0]) == ((SERVER,), "Waiting for your home volume to be free")


async def test_attach_behind_a_detach_that_never_ends_is_bounded() -> None:
    cloud = FakeCloud()
    cloud.add("vol-a", status="detaching", attached_to=(OTHER,))
    with pytest.raises(HomeVolumeError) as err:
        await homes(cloud, detach_timeout_seconds=0.05).attach("vol-a", SERVER)
    assert (err.value.reason, "still detaching" in str(err.value)) == ("timeout", True)


async def test_attach_request_lost_but_attaching_is_waited_for() -> None:
    cloud = FakeCloud()
    cloud.add("vol-a")
    cloud.fail["attach_volume"] = CloudError("attach: connection reset", transient=True)
    cloud.plans["vol-a"] = [("available", ()), ("attaching", ()), ("in-use", (SERVER,))]
    volume = await homes(cloud).attach("vol-a", SERVER)
    assert volume.status == "in-use"


async def test_attach_refused_by_nova_is_attach_failed() -> None:
    cloud = FakeCloud()
    cloud.add("vol-a")
    cloud.fail["attach_volume"] = CloudError("attach failed: 500", transient=True, status=500)
    with pytest.raises(HomeVolumeError) as err:
        await homes(cloud).attach("vol-a", SERVER)
    assert (err.value.reason, "500" in str(err.value)) == ("attach-failed", True)


# ---------------------------------------------------------------------------------------- detach


async def test_detach_waits_until_available() -> None:
    cloud = FakeCloud()
    cloud.add("vol-a", status="in-use", attached_to=(SERVER,))
    assert await homes(cloud).detach("vol-a", SERVER) is True
    assert cloud.volumes["vol-a"].status == "available"


@pytest.mark.parametrize(("status", "attached_to"), [("available", ()), ("in-use", (OTHER,))])
async def test_detach_of_a_volume_not_on_that_server_makes_no_call(status: str, attached_to: tuple[str, ...]) -> None:
    cloud = FakeCloud()
    cloud.add("vol-a", status=status, attached_to=attached_to)
    assert await homes(cloud).detach("vol-a", SERVER) is True
    assert "detach_volume" not in cloud.names()


async def test_slow_detach_is_reported_and_the_volume_kept() -> None:
    cloud, reports = FakeCloud(), []
    cloud.add("vol-a", status="in-use", attached_to=(SERVER,))
    cloud.plans["vol-a"] = [("in-use", (SERVER,))] + [("detaching", (SERVER,))] * 10_000
    assert await homes(cloud, reports, detach_timeout_seconds=0.05).detach("vol-a", SERVER) is False
    assert (reports[-1], "delete_volume" in cloud.names()) == ("Your home volume is still detaching; it is kept", False)


async def test_detach_waits_for_an_attach_in_progress_first() -> None:
    cloud = FakeCloud()
    cloud.add("vol-a", status="attaching")
    cloud.plans["vol-a"] = [("attaching", ()), ("in-use", (SERVER,))]
    assert await homes(cloud).detach("vol-a", SERVER) is True
    assert "detach_volume" in cloud.names()


# ---------------------------------------------------------------------------------------- delete_forever


async def test_delete_forever_deletes_only_this_users_volume() -> None:
    cloud = FakeCloud()
    cloud.add("vol-a")
    other = home_volume_ref("jupyter-home-{username}", hub_id="other-hub", username="alice", servername="")
    cloud.add("vol-other-hub", ref=other)
    assert await homes(cloud).delete_forever(REF) == ["vol-a"]
    assert list(cloud.volumes) == ["vol-other-hub"]


async def test_delete_forever_detaches_first() -> None:
    cloud = FakeCloud()
    cloud.add("vol-a", status="in-use", attached_to=(SERVER,))
    assert await homes(cloud).delete_forever(REF) == ["vol-a"]
    assert cloud.names()[-2:] == ["get_volume", "delete_volume"] and "detach_volume" in cloud.names()


async def test_delete_forever_keeps_a_volume_that_does_not_detach() -> None:
    cloud = FakeCloud()
    cloud.add("vol-a", status="detaching", attached_to=(SERVER,))
    with pytest.raises(HomeVolumeError):
        await homes(cloud, detach_timeout_seconds=0.05).delete_forever(REF)
    assert "vol-a" in cloud.volumes


# ---------------------------------------------------------------------------------------- for the user


@pytest.mark.parametrize(("reason", "status"), [("attached-elsewhere", 409), ("error", 503), ("timeout", 503)])
def test_home_volume_errors_reach_the_user_without_detail(reason: str, status: int) -> None:
    err = errors.for_user(HomeVolumeError("Your home volume ...", "vol-123 on server-9", reason=reason), "alice")
    assert (err.status_code, err.jupyterhub_message, "vol-123" in err.log_message) == (  # type: ignore[attr-defined]
        status,
        "Your home volume ...",
        True,
    )
