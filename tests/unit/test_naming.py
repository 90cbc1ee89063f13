"""Instance names, Linux usernames and tags: table-driven."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libcloudspawner import naming

DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
LINUX_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("alice", "alice"),
        ("alice-2", "alice-2"),
        ("a", "a"),
    ],
)
def test_safe_slug_keeps_safe_values(value, expected):
    assert naming.safe_slug(value) == expected


@pytest.mark.parametrize(
    "value",
    ["Alice", "alice--x", "-alice", "alice-", "al ice", "alice\nruncmd: [reboot]", "élodie", "", "a" * 64, "a.b"],
)
def test_safe_slug_escapes_and_hashes(value):
    slug = naming.safe_slug(value)
    assert "---" in slug
    assert DNS_LABEL.match(slug), slug
    assert len(slug) <= 63


@pytest.mark.parametrize(
    ("template", "username", "servername", "expected"),
    [
        ("jupyter-{username}", "alice", "", "jupyter-alice"),
        ("jupyter-{username}", "alice", "gpu", "jupyter-alice--gpu"),
        ("{hub_id}-{username}--{servername}", "bob", "x1", "hub-bob--x1"),
        ("{hub_id}-{username}--{servername}", "bob", "", None),  # trailing dashes: hashed
    ],
)
def test_instance_name_table(template, username, servername, expected):
    name = naming.instance_name(template, username=username, servername=servername, hub_id="hub")
    if expected is None:
        assert "---" in name and DNS_LABEL.match(name)
    else:
        assert name == expected


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("alice", ""), ("Alice", "")),
        (("a", "b"), ("a-b", "")),
        (("a", "b-c"), ("a-b", "c")),
        (("a--b", ""), ("a", "b")),
        (("alice", "x"), ("alice--x", "")),
        (("a" * 70, ""), ("a" * 71, "")),
        (("alice", "gpu"), ("alice", "GPU")),
    ],
)
def test_instance_names_never_collide(first, second):
    template = naming.DEFAULT_INSTANCE_NAME_TEMPLATE
    a = naming.instance_name(template, username=first[0], servername=first[1])
    b = naming.instance_name(template, username=second[0], servername=second[1])
    assert a != b


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("jupyter", "must contain {username}"),
        ("jupyter-{user}", "unknown field"),
        ("{username}-{servername}", "separate {username} and {servername}"),
        ("{username!r}", "no format spec"),
        ("{username", "not a valid template"),
    ],
)
def test_bad_templates_are_refused_clearly(template, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        naming.validate_instance_name_template(template)


names = st.text(min_size=0, max_size=80)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(names.filter(bool), names), min_size=2, max_size=6, unique=True))
def test_instance_names_unique_and_valid(pairs):
    results = [naming.instance_name(naming.DEFAULT_INSTANCE_NAME_TEMPLATE, username=u, servername=s) for u, s in pairs]
    for result in results:
        assert DNS_LABEL.match(result), result
    assert len(set(results)) == len(results)


@pytest.mark.parametrize(
    ("hub_user", "expected"),
    [("alice", "alice"), ("bob_2", "bob_2"), ("a-b", "a-b"), ("debian2", "debian2"), ("ubuntu-fan", "ubuntu-fan")],
)
def test_linux_username_kept_when_safe(hub_user, expected):
    assert naming.linux_username(hub_user) == expected


@pytest.mark.parametrize(
    "hub_user",
    [
        "root",
        "Alice",
        "alice@example.org",
        "1user",
        "a" * 40,
        "systemd-network",
        "daemon",
        "",
        "-x",
        "alice\nruncmd: [reboot]",
        "élodie",
        "www-data",
        "_svc",  # the distributions' namespace for system accounts (_apt, _chrony, ...)
        "sshd",
        "messagebus",
        "lcs-build",
    ],
)
def test_linux_username_escaped(hub_user):
    result = naming.linux_username(hub_user)
    assert LINUX_USER.match(result), result
    assert result != hub_user
    assert result not in naming.RESERVED_LINUX_USERS


@pytest.mark.parametrize(
    "account",
    ["debian", "ubuntu", "cloud-user", "ec2-user", "centos", "fedora", "rocky", "almalinux", "admin", "core",
     "alpine", "arch", "opensuse", "freebsd"],
)  # fmt: skip
def test_a_hub_user_named_like_a_distributions_default_account_is_remapped(account):
    """The default account has passwordless sudo: a hub user of that name must get an account of their own."""
    result = naming.linux_username(account)
    assert result != account and result.startswith(account.replace("-", "_") + "_")
    assert LINUX_USER.match(result) and result not in naming.RESERVED_LINUX_USERS
    with pytest.raises(ValueError, match="system account"):
        naming.validate_linux_username(account)  # forceuser cannot name it either


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=60), min_size=2, max_size=5, unique=True))
def test_linux_usernames_unique(users):
    results = [naming.linux_username(u) for u in users]
    assert all(LINUX_USER.match(r) for r in results)
    assert len(set(results)) == len(results)


@pytest.mark.parametrize("name", ["root", "Bob", "a b", "x" * 33, "9abc", "systemd-timesync"])
def test_validate_linux_username_refuses(name):
    with pytest.raises(ValueError):
        naming.validate_linux_username(name)


def test_tags_identify_hub_user_and_server():
    tags = naming.instance_tags(hub_id="hub1", username="alice", servername="gpu")
    assert tags == {
        "jupyterhub-hub-id": "hub1",
        "jupyterhub-user": "alice",
        "jupyterhub-server-name": "gpu",
        "jupyterhub-managed-by": "libcloudspawner",
    }


@pytest.mark.parametrize(
    ("metadata", "matches"),
    [
        (
            {
                "jupyterhub-hub-id": "h",
                "jupyterhub-user": "a",
                "jupyterhub-server-name": "",
                "jupyterhub-managed-by": "libcloudspawner",
                "extra": "x",
            },
            True,
        ),
        (
            {
                "jupyterhub-hub-id": "other",
                "jupyterhub-user": "a",
                "jupyterhub-server-name": "",
                "jupyterhub-managed-by": "libcloudspawner",
            },
            False,
        ),
        ({}, False),
        (None, False),
    ],
)
def test_tags_match(metadata, matches):
    tags = naming.instance_tags(hub_id="h", username="a", servername="")
    assert naming.tags_match(metadata, tags) is matches


def test_long_metadata_values_capped_and_distinct():
    a, b = "x" * 300, "x" * 299 + "y"
    assert len(naming.metadata_value(a)) == 255
    assert naming.metadata_value(a) != naming.metadata_value(b)


@pytest.mark.parametrize(("hub_user", "reserved"), [("jovyan", {"jovyan"}), ("alice", ["bob", "alice"])])
def test_an_account_the_image_records_is_remapped(hub_user, reserved):
    result = naming.linux_username(hub_user, reserved=reserved)
    assert result != hub_user and result.startswith(hub_user + "_") and LINUX_USER.match(result)
    assert result not in reserved


def test_accounts_of_the_image_do_not_change_other_names():
    assert naming.linux_username("alice", reserved={"jovyan"}) == "alice"
