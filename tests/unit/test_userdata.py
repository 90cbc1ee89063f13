"""Rendering the cloud-config: the contract with cloud-init, systemd and the OpenStack API double."""

from __future__ import annotations

import os

import pytest
import yaml
from cloudinit_validator import Validator, validate_with_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from systemd_rules import parse_env_file, split_exec_start, unit_settings

from libcloudspawner import userdata
from libcloudspawner.userdata import UserDataError, render_userdata

CMD = ["jupyterhub-singleuser"]
ENV = {"JUPYTERHUB_API_TOKEN": "secret-token", "JUPYTERHUB_USER": "alice"}


@pytest.fixture(scope="module")
def validator():
    v = Validator()
    yield v
    v.close()


def _files(doc: dict) -> dict[str, dict]:
    return {f["path"]: f for f in doc["write_files"]}


def _roundtrip(rendered: str):
    doc = yaml.safe_load(rendered)
    files = _files(doc)
    env = parse_env_file(files[userdata.ENV_PATH]["content"])
    unit = unit_settings(files[userdata.UNIT_PATH]["content"])
    return doc, env, unit


def test_document_shape():
    doc, env, unit = _roundtrip(render_userdata(username="alice", env=ENV, cmd=CMD))
    assert doc["users"] == [
        {"name": "alice", "homedir": "/home/alice", "shell": "/bin/bash", "lock_passwd": True},
    ]
    assert doc["runcmd"] == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "jupyterhub-singleuser.service"],
    ]
    # the early start: queued by bootcmd, run once cloud-init's network stage has written the files and
    # created the user; neither the stage nor the queued unit waits (a blocking start would deadlock boot)
    [early] = doc["bootcmd"]
    assert early[:2] == ["systemd-run", "--no-block"]
    assert "--property=After=cloud-init.service cloud-init-network.service" in early
    assert early[early.index("systemctl") :] == ["systemctl", "start", "--no-block", "jupyterhub-singleuser.service"]
    assert env == ENV
    assert unit["User"] == "alice"
    assert unit["WorkingDirectory"] == "/home/alice"
    assert unit["EnvironmentFile"] == "/etc/jupyterhub-singleuser/env"
    assert unit["Restart"] == "on-failure"
    assert split_exec_start(unit["ExecStart"]) == CMD


@pytest.mark.parametrize(
    ("path", "owner", "permissions"),
    [
        ("/etc/jupyterhub-singleuser/env", "root:root", "0600"),
        ("/etc/systemd/system/jupyterhub-singleuser.service", "root:root", "0644"),
    ],
)
def test_file_modes(path, owner, permissions):
    doc, _, _ = _roundtrip(render_userdata(username="alice", env=ENV, cmd=CMD))
    assert (_files(doc)[path]["owner"], _files(doc)[path]["permissions"]) == (owner, permissions)


def test_no_secret_in_the_unit():
    doc, _, _ = _roundtrip(render_userdata(username="alice", env=ENV, cmd=CMD))
    assert "secret-token" not in _files(doc)[userdata.UNIT_PATH]["content"]


@pytest.mark.parametrize(
    "value",
    [
        "alice\nruncmd: [reboot]",
        '"; reboot; echo "',
        "$(reboot) `reboot` ${HOME} $HOME",
        "100% %h %%",
        "back\\slash\\n not a newline",
        "'single' \"double\"",
        "two\nlines\n",
        "emoji 😀 and \u2028 line sep \x85 nel \ufeff bom",
        "  leading and trailing  ",
        "# not a comment",
        "- [ ] : {} & * ! | > ' \" % @ `",
        "",
    ],
)
def test_hostile_env_values_round_trip(value, validator):
    env = {"HOSTILE": value, **ENV}
    cmd = ["jupyterhub-singleuser", value, f"--arg={value}"]
    rendered = render_userdata(username="alice", env=env, cmd=cmd)
    ok, error, parsed = validator.validate(rendered)
    assert ok, error
    doc, parsed_env, unit = _roundtrip(rendered)
    assert parsed == doc  # cloud-init's own YAML loader reads what PyYAML reads
    assert parsed_env == env
    assert split_exec_start(unit["ExecStart"]) == cmd
    assert set(doc) == {"users", "write_files", "bootcmd", "runcmd"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"username": "alice\nruncmd: [reboot]"}, "not a valid Linux username"),
        ({"username": "Alice"}, "not a valid Linux username"),
        ({"env": {"BAD KEY": "x"}}, "name 'BAD KEY' is not valid"),
        ({"env": {"1X": "x"}}, "not valid"),
        ({"env": {"X": 3}}, "must be a string"),
        ({"env": {"X": "a\x00b"}}, "NUL"),
        ({"env": {"X": "\udc80"}}, "surrogate"),
        ({"env": {"TABBED": "a\tb"}}, "TABBED contains the control character"),
        ({"env": {"X": "a\rb"}}, "control character"),
        ({"env": {"COLOR": "\x1b[31m"}}, "COLOR contains the control character"),
        ({"env": {"X": "\x7f"}}, "control character"),
        ({"cmd": []}, "empty"),
        ({"env": {"BIG": "x" * 70000}}, "over the cloud's limit"),
    ],
)
def test_refusals_are_clear(kwargs, message):
    args = {"username": "alice", "env": ENV, "cmd": CMD, **kwargs}
    with pytest.raises(UserDataError, match=message):
        render_userdata(**args)


def test_template_override_is_used_and_strict():
    rendered = render_userdata(username="bob", env={}, cmd=CMD, template="#cloud-config\n# {{ username | tojson }}\n")
    assert rendered == '#cloud-config\n# "bob"\n'
    with pytest.raises(UserDataError, match="does not render"):
        render_userdata(username="bob", env={}, cmd=CMD, template="#cloud-config\n{{ undefined_thing }}\n")


def test_packaged_template_passes_the_real_cloud_init_cli(tmp_path):
    path = tmp_path / "user-data"
    path.write_text(render_userdata(username="alice", env={"X": "alice\nruncmd: [reboot]", **ENV}, cmd=CMD))
    result = validate_with_cli(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


linux_users = st.from_regex(r"\A[a-z_][a-z0-9_-]{0,31}\Z")
env_keys = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,20}\Z")
# any Unicode text but NUL and lone surrogates, which no process environment can carry
arg_values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=60)
# ...and, in an environment value, no control character but newline (systemd drops such a variable)
SYSTEMD_DROPPED = "".join(chr(c) for c in [*range(0x01, 0x0A), *range(0x0B, 0x20), 0x7F])
env_values = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00" + SYSTEMD_DROPPED), max_size=60
)


# LCS_PROPERTY_EXAMPLES=10000 for the full campaign; CI runs the default
@settings(
    max_examples=int(os.environ.get("LCS_PROPERTY_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    username=linux_users,
    env=st.dictionaries(env_keys, env_values, max_size=6),
    args=st.lists(arg_values, max_size=4),
)
def test_property_schema_valid_and_exact_round_trip(validator, username, env, args):
    cmd = ["jupyterhub-singleuser", *args]
    rendered = render_userdata(username=username, env=env, cmd=cmd)
    ok, error, parsed = validator.validate(rendered)
    assert ok, error
    doc, parsed_env, unit = _roundtrip(rendered)
    assert parsed == doc
    assert set(doc) == {"users", "write_files", "bootcmd", "runcmd"}
    assert doc["users"] == [{"name": username, "homedir": f"/home/{username}", "shell": "/bin/bash",
                             "lock_passwd": True}]  # fmt: skip
    assert parsed_env == env
    assert split_exec_start(unit["ExecStart"]) == cmd
    assert unit["User"] == username
    assert doc["runcmd"][1] == ["systemctl", "enable", "--now", "jupyterhub-singleuser.service"]


@pytest.mark.parametrize(("default_user", "users"), [(False, ["alice"]), (True, ["default", "alice"])])
def test_the_images_default_account_only_with_a_key_pair(validator, default_user, users):
    """The default account (passwordless sudo on the distributions' images) exists only when the administrator
    configured a key pair to log in with; the document stays valid for the real cloud-init either way."""
    rendered = render_userdata(username="alice", env=ENV, cmd=CMD, default_user=default_user)
    ok, error, parsed = validator.validate(rendered)
    assert ok, error
    assert [u if isinstance(u, str) else u["name"] for u in parsed["users"]] == users


@pytest.mark.parametrize(("key", "value"), [pair for pair in userdata.SANDBOX if pair[0] != "SystemCallFilter"])
def test_unit_is_sandboxed(key, value):
    _, _, unit = _roundtrip(render_userdata(username="alice", env=ENV, cmd=CMD))
    assert unit[key] == value


def test_unit_home_writable_by_path():
    _, _, unit = _roundtrip(render_userdata(username="alice", env=ENV, cmd=CMD))
    assert (unit["ProtectSystem"], unit["ReadWritePaths"]) == ("strict", "/home/alice")


def test_unit_closes_the_metadata_service_to_the_account_by_default():
    _, _, unit = _roundtrip(render_userdata(username="alice", env=ENV, cmd=CMD))
    argv = split_exec_start(unit["ExecStartPre"].removeprefix("+"))
    assert argv[0] == "/usr/sbin/nft" and len(argv) == 2
    rules = [r.strip() for r in argv[1].split(";") if r.strip().startswith("add rule")]
    assert len(rules) == 4
    for address in userdata.METADATA_ADDRESSES:
        assert sum('meta skuid "alice"' in r and f"daddr {address}" in r and " reject" in r for r in rules) == 2


def test_metadata_service_open_when_configured():
    _, _, unit = _roundtrip(render_userdata(username="alice", env=ENV, cmd=CMD, metadata_service=True))
    assert "ExecStartPre" not in unit
    assert unit["NoNewPrivileges"] == "yes"  # the sandbox stays
