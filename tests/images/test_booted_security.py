"""The booted image's security guarantees, as a spawned server has them: the unit's sandbox (its effective
properties and ``systemd-analyze security``'s exposure score), a kernel that still runs numpy and matplotlib
inside it, the metadata service closed to the server's account, and a hub user named like the image's
default account running as a fresh account without sudo.

Run with test_booted.py (same session, same VM; conftest's ``booted``). The kernel is started through the
server's own REST API and run on its websocket (``testkit.e2e.run_in_kernel``), so it is a child of the
sandboxed server, not a process started over SSH.
"""

from __future__ import annotations

import json
import re
import shlex

import pytest

from testkit.e2e import run_in_kernel

UNIT = "jupyterhub-singleuser.service"
#: `systemd-analyze security`'s overall exposure (0 safest, 10 unsandboxed; "OK" up to 3.9); measured 2.x
EXPOSURE_MAX = 3.0
METADATA_V4 = "169.254.169.254"
#: a kernel's first answer takes 25-60 s on an emulated guest
KERNEL_DEADLINE_S = 300


@pytest.fixture(autouse=True)
def _vm(booted):
    return booted


@pytest.fixture(scope="module")
def in_kernel(booted):
    """Run Python in a kernel of the server; its stdout (the code must succeed)."""

    def run(code: str) -> str:
        result = run_in_kernel(booted, booted.hub_user, code, timeout_s=KERNEL_DEADLINE_S)
        assert result["status"] == "ok", result
        return result["stdout"]

    return run


@pytest.mark.parametrize(
    "prop, expected",
    [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "read-only"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("ProtectProc", "invisible"),
        ("RestrictSUIDSGID", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("RemoveIPC", "yes"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
    ],
)
def test_sandbox_property(host, prop, expected):
    assert host.check_output(f"systemctl show -p {prop} --value {UNIT}") == expected


def test_sandbox_home_writable_by_path(host, booted):
    assert host.check_output(f"systemctl show -p ReadWritePaths --value {UNIT}") == f"/home/{booted.username}"


def test_sandbox_exposure_score(host):
    out = host.check_output(f"systemd-analyze security --no-pager {UNIT}")
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert m, out[-2000:]
    print(f"\nsystemd-analyze security {UNIT}: {m[1]}")
    assert float(m[1]) <= EXPOSURE_MAX, out


def test_kernel_runs_numpy_and_matplotlib_in_the_sandbox(in_kernel):
    code = (
        "import numpy, matplotlib, os; matplotlib.use('Agg'); import matplotlib.pyplot as plt; "
        "plt.plot(numpy.arange(5)); p = os.path.expanduser('~/sandbox-plot.png'); plt.savefig(p); "
        "print(int(numpy.ones(4).sum()), os.path.getsize(p) > 1000)"
    )
    assert in_kernel(code).split() == ["4", "True"]


def test_kernel_keeps_what_notebooks_use(in_kernel):
    """Home and /tmp writable, /opt and /etc not; a terminal's pty; multiprocessing (its semaphores in
    /dev/shm); a subprocess; a user's own venv made in the home."""
    code = (
        "import multiprocessing, os, subprocess, sys, tempfile\n"
        "def sq(x):\n    return x * x\n"
        "def writable(d):\n"
        "    try:\n        tempfile.TemporaryFile(dir=d).close(); return True\n"
        "    except OSError:\n        return False\n"
        "fd, _ = os.openpty()\n"
        "with multiprocessing.get_context('fork').Pool(2) as pool:\n    squares = pool.map(sq, [1, 2, 3])\n"
        "venv = subprocess.run([sys.executable, '-m', 'venv', '--without-pip', os.path.expanduser('~/own-venv')])\n"
        "print(writable(os.path.expanduser('~')), writable('/tmp'), writable('/opt/jupyter'), writable('/etc'),"
        " fd > 0, squares, venv.returncode)\n"
    )
    assert in_kernel(code).strip() == "True True False False True [1, 4, 9] 0"


def test_kernel_runs_as_the_remapped_account_without_sudo(host, booted, in_kernel):
    """The hub user `debian` (the image's default account, present with passwordless sudo) runs as a fresh
    account: not `debian`'s uid, in no admin group, and `sudo -n true` fails in the kernel."""
    assert booted.hub_user == "debian" and booted.username != "debian"
    debian_uid = host.check_output("id -u debian")
    assert "sudo" in host.check_output("id -Gn debian").split()  # the account the re-mapping avoids
    code = (
        "import os, subprocess; "
        "r = subprocess.run(['sudo', '-n', 'true'], capture_output=True); "
        "print(os.getuid(), subprocess.run(['id', '-un'], capture_output=True, text=True).stdout.strip(), "
        "subprocess.run(['id', '-Gn'], capture_output=True, text=True).stdout.strip().replace(' ', ','), "
        "r.returncode)"
    )
    uid, name, groups, sudo_rc = in_kernel(code).split()
    assert name == booted.username
    assert uid != debian_uid and uid == host.check_output(f"id -u {booted.username}")
    assert not {"sudo", "adm", "root", "wheel"} & set(groups.split(","))
    assert sudo_rc != "0"


def test_remapped_account_has_no_sudo_outside_the_sandbox(host, booted):
    """Without the unit's NoNewPrivileges too: the account has no sudo rule."""
    out = host.run(f"runuser -u {booted.username} -- sudo -n true")
    assert out.rc != 0, out.stdout + out.stderr


# --- the metadata service ----------------------------------------------------------------------------------
# The guest has no metadata service, and no packet may leave the host for 169.254.169.254: the fixture serves
# a stand-in on the guest's loopback (the address added to `lo`), so every connection below stays in the guest.
# The rule rejects (a TCP reset): the account's connect() is refused at once instead of waiting for its timeout.


@pytest.fixture(scope="module")
def metadata_stand_in(host):
    """(testinfra runs every command as root: `--sudo`)"""
    host.check_output(f"ip addr add {METADATA_V4}/32 dev lo")
    try:
        host.check_output(
            "systemd-run --unit=lcs-metadata-stand-in --quiet /usr/bin/python3 -m http.server"
            f" --bind {METADATA_V4} 80 --directory /usr/share/doc/cloud-init"
        )
        probe = f"import urllib.request as u; u.urlopen('http://{METADATA_V4}/', timeout=5).read()"
        host.check_output(f"timeout 60 sh -c {shlex.quote(f'until python3 -c {shlex.quote(probe)}; do sleep 1; done')}")
        yield METADATA_V4
    finally:
        host.run("systemctl stop lcs-metadata-stand-in")
        host.run(f"ip addr del {METADATA_V4}/32 dev lo")


CONNECT = (
    "import errno, socket, time; s = socket.socket(); s.settimeout(10); t = time.monotonic(); "
    "r = s.connect_ex(('{addr}', 80)); print(errno.errorcode.get(r, r), round(time.monotonic() - t, 2))"
)


def test_metadata_rule_installed_for_the_account(host, booted):
    ruleset = host.check_output("nft -j list table inet jupyterhub_singleuser")
    text = json.dumps(json.loads(ruleset))
    assert METADATA_V4 in text and "fe80::a9fe:a9fe" in text and '"skuid"' in text and '"reject"' in text, text
    assert booted.username in text or host.check_output(f"id -u {booted.username}") in text, text


def test_metadata_blocked_for_the_account_at_once(host, booted, metadata_stand_in):
    code = CONNECT.format(addr=metadata_stand_in)
    out = host.check_output(f"runuser -u {booted.username} -- python3 -c {shlex.quote(code)}")
    error, seconds = out.split()
    assert error == "ECONNREFUSED" and float(seconds) < 3, out


def test_metadata_blocked_in_the_kernel(in_kernel, metadata_stand_in):
    error, seconds = in_kernel(CONNECT.format(addr=metadata_stand_in)).split()
    assert error == "ECONNREFUSED" and float(seconds) < 3, (error, seconds)


def test_metadata_open_to_root(host, metadata_stand_in):
    out = host.check_output(f"curl -sS -m 10 -o /dev/null -w '%{{http_code}}' http://{metadata_stand_in}/")
    assert out == "200"
