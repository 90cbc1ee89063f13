"""The image booted like a spawned server: the spawner's own user-data for a test user, no video device.

Run by `invoke test-image` with ``--hosts=ssh://lcs-test@127.0.0.1:PORT`` (a login the seed's boothook
creates) and the VM options of conftest.py. Every check reads effective state (``systemctl show``, ``stat``).
"""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

UNIT = "jupyterhub-singleuser.service"


@pytest.fixture(autouse=True)
def _vm(booted):
    """Boot the VM once for the session (conftest's ``booted``), before testinfra connects."""
    return booted


def test_cloud_init_done(host):
    out = host.run("timeout 300 cloud-init status --wait")
    assert "status: done" in out.stdout, out.stdout + out.stderr


def test_unit_started_before_cloud_inits_final_stage(host):
    """The template's bootcmd starts the server once the network stage is done, beside the config and final
    stages: not from runcmd, which runs in the final stage."""

    def monotonic_us(unit: str) -> int:
        return int(host.check_output(f"systemctl show -p ExecMainStartTimestampMonotonic --value {unit}"))

    started, final = monotonic_us(UNIT), monotonic_us("cloud-final.service")
    assert 0 < started < final, f"{UNIT} started at {started / 1e6:.1f} s, the final stage at {final / 1e6:.1f} s"


@pytest.mark.parametrize(
    "prop, expected",
    [("UnitFileState", "enabled"), ("ActiveState", "active"), ("SubState", "running"), ("User", None)],
)
def test_unit_state(host, booted, prop, expected):
    assert host.check_output(f"systemctl show -p {prop} --value {UNIT}") == (expected or booted.username)


def test_unit_process_runs_as_user(host, booted):
    pid = host.check_output(f"systemctl show -p MainPID --value {UNIT}")
    assert pid != "0"
    assert host.check_output(f"ps -o user= -p {pid}") == booted.username


@pytest.mark.parametrize("attr, expected", [("mode", 0o600), ("user", "root"), ("group", "root")])
def test_env_file(host, attr, expected):
    f = host.file("/etc/jupyterhub-singleuser/env")
    assert f.exists
    assert getattr(f, attr) == expected


def test_listens_on_singleuser_port(host):
    assert host.socket("tcp://0.0.0.0:8000").is_listening


def test_singleuser_answers_http(booted):
    with urllib.request.urlopen(booted.singleuser_url + "api", timeout=10) as r:  # noqa: S310 - loopback
        assert r.status == 200
        assert "version" in json.loads(r.read())


def test_singleuser_reached_the_hub_api(booted):
    assert booted.hub.seen("GET", "/hub/api"), booted.hub.requests


def test_server_resumed_the_gc_paused_for_its_start(host):
    """The image's jupyterhub-singleuser pauses the cyclic GC while the server starts; the server itself, through
    the helper's extension, resumes it when it begins serving (images/packer/files/lcs_startup.py)."""
    log = host.check_output(f"journalctl -o cat -u {UNIT}")
    resumed = [line for line in log.splitlines() if "lcs_startup: cyclic GC resumed (the server is serving)" in line]
    assert len(resumed) == 1, log[-3000:]
    frozen = int(re.search(r"; (\d+) start-up objects frozen", resumed[0]).group(1))
    assert frozen > 100_000  # the start-up's objects, no longer scanned by every full collection


def test_singleuser_major_version_matches_hub(host):
    from jupyterhub import __version__ as hub_version

    out = host.check_output("/usr/local/bin/jupyterhub-singleuser --version")
    assert out.split(".")[0] == hub_version.split(".")[0]


def python_as_user(host, booted, code: str) -> str:
    """Run ``code`` with the image's Python as the spawned user; its standard output (it must succeed)."""
    out = host.run(f"runuser -u {booted.username} -- /usr/local/bin/python -c {code!r}")
    assert out.rc == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize(
    "code", ["import numpy; numpy.ones(3).sum()", "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot"]
)
def test_imports_as_user(host, booted, code):
    python_as_user(host, booted, code)


def test_hub_orm_still_stamps_a_database(host, booted):
    """The image moves Alembic's imports into JupyterHub's check_db_revision (patches/jupyterhub-*/0001); that
    function still creates and stamps a fresh hub database with the schema's head revision."""
    code = (
        "import os, sqlite3, tempfile, jupyterhub.orm as orm; "
        "f = os.path.join(tempfile.mkdtemp(), 'hub.sqlite'); "
        "orm.new_session_factory('sqlite:///' + f); "
        "print(sqlite3.connect(f).execute('select version_num from alembic_version').fetchone()[0])"
    )
    revision = python_as_user(host, booted, code).strip()
    assert re.fullmatch(r"[0-9a-f]{12}", revision), revision


def test_hub_modules_still_work_after_the_deferral(host, booted):
    """The imports the patch set (images/packer/patches/) defers still resolve where the hub needs them: the whole hub
    application imports; with a real hub database, the default roles and a user's scopes (scopes.py's lazy orm
    and roles, rebound to the modules on first use), log.py's health-check test and the SQLAlchemy error class
    that utils.catch_db_error catches."""
    code = (
        "import jupyterhub.app; from jupyterhub import log, orm, roles, scopes, utils; "
        "from jupyterhub.handlers.pages import HealthCheckHandler as H; import sqlalchemy.exc; "
        "db = orm.new_session_factory('sqlite://')(); "
        "[roles.create_role(db, r) for r in roles.get_default_roles()]; "
        "u = orm.User(name='alice'); db.add(u); db.commit(); roles.assign_default_roles(db, entity=u); "
        "s = scopes.get_scopes_for(u); "
        "print('read:users:activity!user=alice' in s, scopes.orm is orm, scopes.roles is roles, "
        "log._lcs_is_health_check(H.__new__(H)), log._lcs_is_health_check(object()), "
        "utils._lcs_sqlalchemy_error() is sqlalchemy.exc.SQLAlchemyError)"
    )
    out = python_as_user(host, booted, code)
    assert out.strip().splitlines()[-1] == "True True True True False True", out


def test_ssh_host_keys_regenerated(host):
    f = host.file("/etc/ssh/ssh_host_ed25519_key.pub")
    assert f.exists and f.content_string.startswith("ssh-ed25519 ")
    # only the fast key types are made at first boot (images/packer/scripts/common/10-packages.sh)
    assert host.file("/etc/ssh/ssh_host_ecdsa_key.pub").exists
    assert not host.file("/etc/ssh/ssh_host_rsa_key").exists


def test_machine_id_regenerated(host):
    assert re.fullmatch(r"[0-9a-f]{32}", host.file("/etc/machine-id").content_string.strip())


def test_grub_ran_on_serial_console(booted):
    """The VM has no video device: GRUB's menu reaches the serial console log only if GRUB is on serial."""
    assert "GNU GRUB" in booted.vm.console_log.read_text(errors="replace")


def test_kernel_console_on_serial(booted):
    assert "Linux version" in booted.vm.console_log.read_text(errors="replace")
