"""Rendering the cloud-config: the contract with cloud-init, systemd and the OpenStack API double."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest
import yaml
from cloudinit_validator import Validator, validate_with_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from systemd_rules import parse_env_file, split_exec_start, unit_settings

from libcloudspawner import userdata
from libcloudspawner.userdata import UserDataError, render_userdata

CMD = ["jupyterhub-singleuser"]
ENV = {
    "JUPYTERHUB_API_TOKEN": "secret-token",
    "JUPYTERHUB_USER": "alice",
    "JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:8000/user/alice/",
}


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
        "default",
        {"name": "alice", "homedir": "/home/alice", "shell": "/bin/bash", "lock_passwd": True},
    ]
    assert doc["runcmd"] == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "jupyterhub-singleuser.service"],
    ]
    # the early start: queued by bootcmd, run once cloud-init's network stage has written the files and
    # created the user; the stage does not wait for it (a blocking start would deadlock boot). The queued
    # oneshot starts the server without waiting for it either, then holds cloud-config.service (and so the
    # final stage) until the server listens: JUPYTERHUB_SERVICE_URL's port here, 0x1F40 = 8000
    [early] = doc["bootcmd"]
    assert early[:2] == ["systemd-run", "--no-block"]
    assert "--property=Type=oneshot" in early
    assert "--property=After=cloud-init.service cloud-init-network.service" in early
    assert "--property=Before=cloud-config.service" in early
    shell = early.index("sh")
    assert early[shell + 1] == "-c"
    assert 'systemctl start --no-block "$1"' in early[shell + 2]
    assert early[shell + 3:] == ["lcs-start-singleuser", "jupyterhub-singleuser.service", "1F40", "300"]
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
        "tab\there\r\ncrlf",
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
env_values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=60)


# LCS_PROPERTY_EXAMPLES=10000 for the full campaign (issue 5); CI runs the default
@settings(
    max_examples=int(os.environ.get("LCS_PROPERTY_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    username=linux_users,
    env=st.dictionaries(env_keys, env_values, max_size=6),
    args=st.lists(env_values, max_size=4),
)
def test_property_schema_valid_and_exact_round_trip(validator, username, env, args):
    cmd = ["jupyterhub-singleuser", *args]
    rendered = render_userdata(username=username, env=env, cmd=cmd)
    ok, error, parsed = validator.validate(rendered)
    assert ok, error
    doc, parsed_env, unit = _roundtrip(rendered)
    assert parsed == doc
    assert set(doc) == {"users", "write_files", "bootcmd", "runcmd"}
    assert doc["users"][1]["name"] == username
    assert parsed_env == env
    assert split_exec_start(unit["ExecStart"]) == cmd
    assert unit["User"] == username
    assert doc["runcmd"][1] == ["systemctl", "enable", "--now", "jupyterhub-singleuser.service"]


@pytest.mark.parametrize(
    ("cmd", "env", "port"),
    [
        (CMD, ENV, 8000),  # JUPYTERHUB_SERVICE_URL's port
        ([*CMD, "--port=9123"], ENV, 9123),  # an explicit --port wins
        ([*CMD, "--ServerApp.port=9124"], ENV, 9124),
        (CMD, {"JUPYTERHUB_USER": "alice"}, userdata.DEFAULT_SERVER_PORT),  # jupyter_server's default
        (CMD, {"JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:notaport/"}, userdata.DEFAULT_SERVER_PORT),
    ],
)
def test_the_port_the_hold_waits_for(cmd, env, port):
    assert userdata.listen_port(env, cmd) == port
    [early] = yaml.safe_load(render_userdata(username="alice", env=env, cmd=cmd))["bootcmd"]
    assert early[-2] == f"{port:04X}"


def _hold(tmp_path, port_hex: str, hold_seconds: int) -> subprocess.CompletedProcess:
    """Run the rendered hold script with the real /bin/sh and the host's /proc/net/tcp; `systemctl` is a
    stand-in on PATH that records its arguments (the script must not wait for the start it asks for)."""
    [early] = yaml.safe_load(render_userdata(username="alice", env=ENV, cmd=CMD))["bootcmd"]
    shell = early.index("sh")
    script = early[shell + 2]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "systemctl.log"}\n')
    (bindir / "systemctl").chmod(0o755)
    env = {"PATH": f"{bindir}:/usr/bin:/bin"}
    args = ["/bin/sh", "-c", script, "lcs-start-singleuser", userdata.UNIT_NAME, port_hex, str(hold_seconds)]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=hold_seconds + 30)


def test_the_hold_ends_as_soon_as_the_server_listens(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        done = _hold(tmp_path, f"{port:04X}", 60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "lcs: jupyterhub-singleuser.service listens after 0 s; cloud-init's config and final stages go on\n"
    )
    assert (tmp_path / "systemctl.log").read_text() == "start --no-block jupyterhub-singleuser.service\n"


def test_the_hold_gives_up_after_its_limit(tmp_path):
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        done = _hold(tmp_path, f"{port:04X}", 4)
    assert done.returncode == 0, done.stderr  # the config and final stages go on regardless
    assert done.stdout == (
        "lcs: jupyterhub-singleuser.service does not listen after 6 s; cloud-init's config and final stages go on\n"
    )


def test_the_hold_script_has_nothing_systemd_would_expand():
    # systemd expands ${VAR} anywhere in an ExecStart argument (and %-specifiers in unit files)
    [early] = yaml.safe_load(render_userdata(username="alice", env=ENV, cmd=CMD))["bootcmd"]
    assert "${" not in early[early.index("sh") + 2]
    assert "%" not in " ".join(early)
