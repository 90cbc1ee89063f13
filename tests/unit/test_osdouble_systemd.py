"""The double's cloud-init / systemd emulation: word splitting, env files, units, boot plans (pure)."""

from __future__ import annotations

import base64
import gzip

import pytest

from testkit.osdouble import systemd
from testkit.osdouble.cloudconfig import build_plan
from testkit.osdouble.instances import service_port, substitute_bind


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a b  c", ["a", "b", "c"]),
        ('singleuser "--ip=0.0.0.0" "--port=8888"', ["singleuser", "--ip=0.0.0.0", "--port=8888"]),
        ("'single quoted' word", ["single quoted", "word"]),
        ("\"a b\"c'd e'", ["a bcd e"]),
        (r'"line\nbreak" "quote\"inside" "back\\slash"', ["line\nbreak", 'quote"inside', "back\\slash"]),
        (r"tab\there \x41\101\u00e9", ["tab\there", "AAé"]),
        (r"escaped\ space", ["escaped space"]),
        ("", []),
    ],
)
def test_split_words_like_systemd(text: str, words: list[str]) -> None:
    assert systemd.split_words(text) == words


@pytest.mark.parametrize("text", ['"unterminated', r"bad\q", "\\"])
def test_split_words_rejects_what_systemd_rejects(text: str) -> None:
    with pytest.raises(systemd.UnitError):
        systemd.split_words(text)


@pytest.mark.parametrize(
    ("word", "expected"),
    [("100%%", "100%"), ("%n-x", "u.service-x"), ("%u@%h", "alice@/home/alice")],
)
def test_specifiers(word: str, expected: str) -> None:
    specs = {"n": "u.service", "u": "alice", "h": "/home/alice"}
    assert systemd.expand_specifiers(word, specs) == expected


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["echo", "$$HOME"], {}, ["echo", "$HOME"]),
        (["echo", "$A"], {"A": "x  y"}, ["echo", "x", "y"]),
        (["echo", "pre${A}post"], {"A": "x y"}, ["echo", "prex ypost"]),
        (["echo", "$MISSING"], {}, ["echo"]),
    ],
)
def test_exec_env_expansion(argv: list[str], env: dict[str, str], expected: list[str]) -> None:
    assert systemd.expand_env_argv(argv, env) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\nB=two words  \n", {"A": "1", "B": "two words"}),
        ("# comment\n; other comment\n  C = spaced\n", {"C": "spaced"}),
        ("S='single $literal \\n'\n", {"S": "single $literal \\n"}),
        ('D="dq \\" \\\\ \\` \\$ \\n kept"\n', {"D": 'dq " \\ ` $ \\n kept'}),
        ('M="multi\nline"\nN=after\n', {"M": "multi\nline", "N": "after"}),
        ("U=unquoted\\ escaped\\#x\n", {"U": "unquoted escaped#x"}),
        ("CONT=one\\\ntwo\n", {"CONT": "onetwo"}),
        ("Q=\"a\" 'b' c\n", {"Q": "abc"}),
        ('MID=a"b"\n', {"MID": 'a"b"'}),
        ("E=\nLAST=no newline", {"E": "", "LAST": "no newline"}),
        ("1BAD=x\nnoequals\nOK=y\n", {"OK": "y"}),
    ],
)
def test_env_file_parsing(text: str, expected: dict[str, str]) -> None:
    env, _warnings = systemd.parse_env_file(text)
    assert env == expected


UNIT = """[Unit]
Description=JupyterHub single-user server

[Service]
User=alice
EnvironmentFile=/etc/jupyterhub-singleuser/env
Environment="GREETING=hello world" PLAIN=1
WorkingDirectory=~
ExecStart=jupyterhub-singleuser "--ip=0.0.0.0" \\
  "--port=8888" "--NotebookApp.x=100%%"
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""

ENV_FILE = 'JUPYTERHUB_API_TOKEN="tok\\"en"\nJUPYTERHUB_SERVICE_URL="http://0.0.0.0:8888/user/alice/"\n'


def cloud_config(runcmd: str, unit: str = UNIT, user: str = "alice", env_file: str = ENV_FILE) -> bytes:
    import yaml

    doc = {
        "users": ["default", {"name": user, "lock_passwd": True}],
        "write_files": [
            {
                "path": "/etc/jupyterhub-singleuser/env",
                "owner": "root:root",
                "permissions": "0600",
                "content": env_file,
            },
            {
                "path": "/etc/systemd/system/jupyterhub-singleuser.service",
                "owner": "root:root",
                "permissions": "0644",
                "content": unit,
            },
        ],
        "runcmd": yaml.safe_load(runcmd),
    }
    return ("#cloud-config\n" + yaml.safe_dump(doc)).encode()


def test_plan_for_the_spawner_shape() -> None:
    runcmd = "[[systemctl, daemon-reload], [systemctl, enable, --now, jupyterhub-singleuser.service]]"
    plan = build_plan(cloud_config(runcmd))
    assert plan.reason == ""
    [unit] = plan.units
    assert unit.runnable, unit.reason
    assert unit.user == "alice"
    assert unit.argv == ["jupyterhub-singleuser", "--ip=0.0.0.0", "--port=8888", "--NotebookApp.x=100%"]
    assert unit.env == {
        "GREETING": "hello world",
        "PLAIN": "1",
        "JUPYTERHUB_API_TOKEN": 'tok"en',
        "JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:8888/user/alice/",
    }
    files = {f.path: f for f in plan.files}
    assert (files["/etc/jupyterhub-singleuser/env"].mode, files["/etc/jupyterhub-singleuser/env"].owner) == (
        0o600,
        "root:root",
    )


@pytest.mark.parametrize(
    ("runcmd", "runnable", "why"),
    [
        ("[[systemctl, start, jupyterhub-singleuser]]", True, ""),
        ('["systemctl daemon-reload && systemctl restart jupyterhub-singleuser.service"]', True, ""),
        ('[[sh, -c, "systemctl enable --now --no-block jupyterhub-singleuser.service"]]', True, ""),
        ("[[systemctl, enable, jupyterhub-singleuser.service]]", None, "only enabled"),
        ("[[systemctl, start, other.service]]", False, "not found"),
        ("[[echo, hello]]", None, "starts no systemd unit"),
    ],
)
def test_runcmd_decides_what_starts(runcmd: str, runnable: bool | None, why: str) -> None:
    plan = build_plan(cloud_config(runcmd))
    if runnable is None:
        assert plan.units == []
        assert any(why in line for line in plan.log)
    else:
        [unit] = plan.units
        assert unit.runnable is runnable
        assert why in unit.reason


@pytest.mark.parametrize(
    ("unit", "user", "env_file", "why"),
    [
        (UNIT, "bob", ENV_FILE, "User=alice does not exist"),
        (
            UNIT.replace("EnvironmentFile=/etc/jupyterhub-singleuser/env", "EnvironmentFile=/etc/missing"),
            "alice",
            ENV_FILE,
            "217/ENVIRONMENT",
        ),
        (UNIT.replace('"--ip=0.0.0.0"', '"--ip=0.0.0.0'), "alice", ENV_FILE, "bad ExecStart"),
        (UNIT.replace("ExecStart=", "#ExecStart="), "alice", ENV_FILE, "no ExecStart"),
    ],
)
def test_broken_units_do_not_run(unit: str, user: str, env_file: str, why: str) -> None:
    plan = build_plan(cloud_config("[[systemctl, enable, --now, jupyterhub-singleuser]]", unit, user, env_file))
    [planned] = plan.units
    assert not planned.runnable
    assert why in planned.reason


@pytest.mark.parametrize(
    ("user_data", "why"),
    [
        (b"", "no user-data"),
        (b"#!/bin/sh\necho hi\n", "does not start with #cloud-config"),
        (b"#cloud-config\nwrite_files: [\n", "not valid YAML"),
        (b"#cloud-config\n- a list\n", "not a mapping"),
    ],
)
def test_unusable_user_data(user_data: bytes, why: str) -> None:
    assert why in build_plan(user_data).reason


def test_write_files_encodings_and_modes() -> None:
    payload = b"binary\x00data"
    doc = (
        "#cloud-config\nwrite_files:\n"
        f"  - {{path: /a, encoding: b64, content: {base64.b64encode(payload).decode()}, permissions: '0755'}}\n"
        f"  - {{path: /b, encoding: gz+b64, content: {base64.b64encode(gzip.compress(b'zipped')).decode()}}}\n"
        "  - {path: /c, content: plain, permissions: 0600, owner: 'alice:alice'}\n"
    ).encode()
    files = {f.path: f for f in build_plan(doc).files}
    assert (files["/a"].content, files["/a"].mode) == (payload, 0o755)
    assert (files["/b"].content, files["/b"].mode) == (b"zipped", 0o644)
    assert (files["/c"].content, files["/c"].mode, files["/c"].owner) == (b"plain", 0o600, "alice:alice")


def test_gzipped_user_data_is_accepted() -> None:
    raw = cloud_config("[[systemctl, start, jupyterhub-singleuser]]")
    encoded = base64.b64encode(gzip.compress(raw)).decode()
    from testkit.osdouble.cloudconfig import decode_user_data

    assert decode_user_data(encoded) == raw


@pytest.mark.parametrize(
    ("argv", "env", "argv_out", "url_out"),
    [
        (["x", "--ip=0.0.0.0", "--port=8888"], {}, ["x", "--ip=127.0.0.9", "--port=8888"], None),
        (["x", "--bind", "0.0.0.0"], {}, ["x", "--bind", "127.0.0.9"], None),
        (["x", "--ip=10.0.0.1"], {}, ["x", "--ip=10.0.0.1"], None),
        (["x"], {"JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:8888/user/a/"}, ["x"], "http://127.0.0.9:8888/user/a/"),
        (["x"], {"JUPYTERHUB_SERVICE_URL": "http://10.1.1.1:8888/"}, ["x"], "http://10.1.1.1:8888/"),
    ],
)
def test_bind_address_substitution(
    argv: list[str], env: dict[str, str], argv_out: list[str], url_out: str | None
) -> None:
    new_argv, new_env = substitute_bind(argv, env, "127.0.0.9")
    assert new_argv == argv_out
    assert new_env.get("JUPYTERHUB_SERVICE_URL") == url_out


def test_service_port_from_plan() -> None:
    plan = build_plan(cloud_config("[[systemctl, start, jupyterhub-singleuser]]"))
    assert service_port(plan, 1234) == 8888
    assert service_port(build_plan(b"#cloud-config\n"), 1234) == 1234


def test_template_unit_and_drop_in() -> None:
    unit = "[Service]\nUser=alice\nExecStart=/usr/bin/env echo %i %p\nEnvironment=A=base\n"
    dropin = "[Service]\nEnvironment=A=override\nExecStart=\nExecStart=/usr/bin/env echo dropin %i\n"
    doc = {
        "users": [{"name": "alice"}],
        "write_files": [
            {"path": "/etc/systemd/system/hello@.service", "content": unit},
            {"path": "/etc/systemd/system/hello@world.service.d/10-x.conf", "content": dropin},
        ],
        "runcmd": [["systemctl", "start", "hello@world"]],
    }
    import yaml

    [planned] = build_plan(("#cloud-config\n" + yaml.safe_dump(doc)).encode()).units
    assert planned.runnable, planned.reason
    assert planned.argv == ["/usr/bin/env", "echo", "dropin", "world"]
    assert planned.env == {"A": "override"}
