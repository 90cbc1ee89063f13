"""The image file before its first boot: a clean template carrying the Jupyter stack and no baked unit.

Run by `invoke test-image` against a read-only mount of the image (``--hosts=local:// --image-root=...``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest

from testkit.imagefiles import load_image_file

PACKER = Path(__file__).resolve().parents[2] / "images" / "packer"
lcs_patches = load_image_file("lcs_patches")

STACK = ["jupyterhub", "jupyterlab", "numpy", "matplotlib"]


def in_image(host, image_root, cmd: str):
    """Run ``cmd`` in the image (chroot, clean environment: the host's PIP_/SSL_ variables stay out)."""
    return host.run(f"env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin chroot {image_root} {cmd}")


@pytest.mark.parametrize(
    "pattern",
    ["etc/ssh/ssh_host_*", "var/lib/cloud/instance", "var/lib/cloud/instances/*", "var/lib/cloud/seed/*",
     "etc/sudoers.d/90-cloud-init-users", "usr/local/share/ca-certificates/lcs-build-extra-ca.crt",
     "var/lib/apt/lists/*_Packages", "tmp/lcs-build", "var/tmp/lcs-finalize.sh", "var/log/cloud-init.log",
     "var/lib/dbus/machine-id", "root/.bash_history"],
)  # fmt: skip
def test_absent(host, image_root, pattern):
    found = sorted(p.relative_to(image_root).as_posix() for p in image_root.glob(pattern))
    assert found == [], f"the template must not carry {pattern}"


def test_machine_id_empty(host, image_root):
    f = host.file(f"{image_root}/etc/machine-id")
    assert f.exists and f.size == 0


@pytest.mark.parametrize("user", ["lcs-build", "debian", "ubuntu"])
def test_no_build_or_cloud_user(host, image_root, user):
    passwd = host.file(f"{image_root}/etc/passwd").content_string
    assert f"\n{user}:" not in "\n" + passwd
    assert not host.file(f"{image_root}/home/{user}").exists


def test_logs_small(host, image_root):
    size_kib = int(host.check_output(f"du -sk {image_root}/var/log").split()[0])
    assert size_kib < 2048, f"/var/log holds {size_kib} KiB"


def test_no_singleuser_unit_baked(host, image_root):
    for d in ("etc/systemd/system", "lib/systemd/system", "usr/lib/systemd/system"):
        assert not list((image_root / d).rglob("jupyterhub-singleuser*")), d
    assert not host.file(f"{image_root}/etc/jupyterhub-singleuser").exists


@pytest.mark.parametrize("cmd", ["jupyter-lab", "jupyter", "pip"])
def test_command_linked_from_venv(host, image_root, cmd):
    link = image_root / "usr/local/bin" / cmd
    assert link.is_symlink(), f"/usr/local/bin/{cmd} is not a link"
    # the link is absolute inside the image: resolve it against the image root, not the host's
    assert os.readlink(link) == f"/opt/jupyter/bin/{cmd}"
    assert host.file(f"{image_root}/opt/jupyter/bin/{cmd}").exists


def test_singleuser_command_is_the_start_up_helper(host, image_root):
    """/usr/local/bin/jupyterhub-singleuser runs lcs_startup.main (GC paused during start-up), whose extension
    is enabled in the venv's Jupyter Server configuration; the booted tier sees the server resume the GC."""
    launcher = image_root / "usr/local/bin/jupyterhub-singleuser"
    assert not launcher.is_symlink() and os.access(launcher, os.X_OK)
    assert launcher.read_text().splitlines()[0] == "#!/opt/jupyter/bin/python"
    assert "from lcs_startup import main" in launcher.read_text()
    conf = image_root / "opt/jupyter/etc/jupyter/jupyter_server_config.d/lcs_startup.json"
    assert json.loads(conf.read_text()) == {"ServerApp": {"jpserver_extensions": {"lcs_startup": True}}}
    out = in_image(host, image_root, "/usr/local/bin/jupyterhub-singleuser --version")
    from jupyterhub import __version__ as hub_version

    assert out.rc == 0, out.stderr
    assert out.stdout.strip().split(".")[0] == hub_version.split(".")[0]


def test_what_a_server_start_imports_is_byte_compiled(host, image_root):
    """Users cannot write .pyc files into the root-owned venv: a module without one is compiled again at every
    start (62 were, measured: the server's request handlers, JupyterLab's HTTP client)."""
    out = in_image(host, image_root, "/opt/jupyter/bin/python -I -c " + repr(
        "import importlib.util as u, os; "
        "mods = ['lcs_startup', 'jupyter_server.services.kernels.handlers', 'jupyter_server.view.handlers', "
        "'tornado.platform.asyncio', 'httpcore._async.http11', 'h11._connection', 'notebook_shim.nbserver', "
        "'jupyter_core.migrate', 'jinja2.ext', 'jupyter_lsp.virtual_documents_shadow']; "
        "print([m for m in mods if not os.path.exists(u.cache_from_source(u.find_spec(m).origin))])"
    ))  # fmt: skip
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_python_command_is_the_venv(host, image_root):
    out = in_image(host, image_root, "/usr/local/bin/python -c 'import sys, numpy; print(sys.prefix)'")
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() == "/opt/jupyter"


def test_stack_versions(host, image_root, pytestconfig):
    from jupyterhub import __version__ as hub_version

    out = in_image(host, image_root, "/opt/jupyter/bin/python -I -c " + repr(
        "import json, importlib.metadata as m; "
        f"print(json.dumps({{d: m.version(d) for d in {STACK!r}}}))"
    ))  # fmt: skip
    assert out.rc == 0, out.stderr
    versions = json.loads(out.stdout)
    assert versions["jupyterhub"].split(".")[0] == hub_version.split(".")[0]
    assert all(versions[d] for d in STACK)


def packages_loaded(host, image_root, imports: str, packages: list[str]) -> list[str]:
    """Which of ``packages`` (top-level names) the image's Python loads when it imports ``imports``."""
    out = in_image(host, image_root, "/opt/jupyter/bin/python -I -c " + repr(
        f"import json, sys, {imports}; "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({packages!r}))))"
    ))  # fmt: skip
    assert out.rc == 0, out.stderr
    return json.loads(out.stdout)


def test_server_start_skips_the_slow_iri_checker(host, image_root):
    """rfc3987-syntax (jsonschema's optional IRI-format checker) costs 25 s of every server start under
    emulation; the lock leaves it out (docs/images.md). The server's imports, with jupyter_events' schema
    validators, still load."""
    imports = "jupyterhub.singleuser, jupyter_server.serverapp, jupyter_events.validators"
    assert packages_loaded(host, image_root, imports, ["rfc3987_syntax", "lark"]) == []


def test_server_start_imports_no_hub_database_stack(host, image_root):
    """A single-user server never opens a database: in the image its imports load none of JupyterHub's ORM,
    SQLAlchemy, Alembic or Mako (patches/jupyterhub-*: 38% fewer instructions for the import than JupyterHub
    as published), and the ORM itself, where the hub imports it, loads no Alembic until check_db_revision runs.
    The booted tier checks the hub's side (test_hub_modules_still_work_after_the_deferral)."""
    imports = "jupyterhub.singleuser, jupyter_server.serverapp, jupyterhub.singleuser.extension"
    assert packages_loaded(host, image_root, imports, ["sqlalchemy", "alembic", "mako"]) == []
    assert packages_loaded(host, image_root, "jupyterhub.orm", ["alembic", "mako"]) == []
    out = in_image(host, image_root, "/opt/jupyter/bin/python -I -c " + repr(
        "import sys, jupyterhub.singleuser; "
        "print(sorted(m for m in sys.modules if m.startswith(('jupyterhub.orm', 'jupyterhub.handlers'))))"
    ))  # fmt: skip
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_server_start_parses_no_ca_bundle_and_aiohttp_still_verifies(host, image_root):
    """aiohttp made its two default TLS contexts at import, each a parse of the whole CA bundle (a sixth of a
    server's start); patches/aiohttp-* makes each on first use. In the image: a server's imports make
    none; an HTTPS request through the real client makes the verifying one (the request itself fails: nothing
    listens on 127.0.0.1:1); it verifies the peer and its hostname against the system's CAs, the other one
    does not verify, each is made once, and the old module-level name still imports it."""
    code = """
import asyncio, json, ssl, aiohttp, jupyterhub.singleuser, jupyter_server.serverapp
from aiohttp import connector as c
r = {"at import": len(c._SSL_CONTEXTS)}

async def request():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        try:
            await session.get("https://127.0.0.1:1/")
        except aiohttp.ClientConnectorError as e:
            return type(e).__name__

r["request"] = asyncio.run(request())
r["made by the request"] = sorted(c._SSL_CONTEXTS)
v, u = c._default_ssl_context(True), c._default_ssl_context(False)
r["verifying"] = [v.verify_mode == ssl.CERT_REQUIRED, v.check_hostname, v.cert_store_stats()["x509_ca"] > 100]
r["not verifying"] = [u.verify_mode == ssl.CERT_NONE, u.check_hostname]
r["kept"] = c._default_ssl_context(True) is v and c._default_ssl_context(False) is u
from aiohttp.connector import _SSL_CONTEXT_VERIFIED
r["old name"] = _SSL_CONTEXT_VERIFIED is v
print(json.dumps(r))
"""
    out = in_image(host, image_root, "/opt/jupyter/bin/python -I -c " + shlex.quote(code))
    assert out.rc == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "at import": 0,
        "request": "ClientConnectorError",
        "made by the request": [True],
        "verifying": [True, True, True],
        "not verifying": [True, False],
        "kept": True,
        "old name": True,
    }


def test_the_patch_set_is_applied_and_record_still_verifies(host, image_root):
    """Every patch of images/packer/patches/ for the image's JupyterHub and aiohttp is there (its reverse
    applies), each dist-info lists what was applied, and every hashed RECORD entry in site-packages of those
    distributions matches its file (the step rewrote the entries of the files it edited)."""
    (site,) = image_root.glob("opt/jupyter/lib/python3*/site-packages")
    planned = lcs_patches.plan(PACKER / "patches", site)
    assert sorted(dist for dist, *_ in planned) == ["aiohttp", "jupyterhub"]
    for dist, _version, directory, info in planned:
        patches = lcs_patches.load_patches(directory)
        texts, states = lcs_patches.dry_run(site, patches)
        assert texts == {} and [s for _, s in states] == ["already applied"] * len(patches), dist
        listed = [line.split()[0] for line in (info / lcs_patches.APPLIED_FILE).read_text().splitlines()]
        assert listed == [p.name for p in patches], dist
        assert lcs_patches.record_mismatches(site, info) == [], dist


def test_pip_check_passes(host, image_root):
    out = in_image(host, image_root, "/opt/jupyter/bin/python -I -m pip check")
    assert out.rc == 0, out.stdout + out.stderr


def test_jupyterlab_extension_manager_is_read_only(host, image_root):
    """JupyterLab's PyPI extension manager builds an HTTP client at every start (8% of its instructions) and
    could install nothing into the root-owned venv: the venv's Jupyter Server configuration selects the
    read-only manager, which is what a server loads from its configuration files."""
    out = in_image(host, image_root, "/opt/jupyter/bin/python -I -c " + repr(
        "from jupyter_server.serverapp import ServerApp; a = ServerApp(); a.load_config_file(); "
        "print(a.config.LabApp.extension_manager)"
    ))  # fmt: skip
    assert out.rc == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "readonly"


def test_jupyter_lsp_server_extension_disabled(host, image_root):
    """No language server in the image: jupyter-lsp's search at every start is off (4.5% of a start's
    instructions), through Jupyter Server's own configuration, so `jupyter server extension enable --sys-prefix
    jupyter_lsp` brings it back; the other extensions stay on."""
    out = in_image(host, image_root, "/opt/jupyter/bin/python -I -c " + repr(
        "import json; from jupyter_server.extension.config import ExtensionConfigManager as M; "
        "from jupyter_core.paths import jupyter_config_path as p; "
        "print(json.dumps(M(read_config_path=p()).get_jpserver_extensions()))"
    ))  # fmt: skip
    assert out.rc == 0, out.stderr
    enabled = json.loads(out.stdout)
    assert enabled["jupyter_lsp"] is False
    assert all(enabled[e] for e in ("jupyterlab", "jupyter_server_terminals", "notebook_shim", "lcs_startup"))


@pytest.mark.parametrize("package", ["cloud-init", "openssh-server", "qemu-guest-agent", "python3-venv", "nftables"])
def test_package_installed(host, image_root, package):
    out = in_image(host, image_root, f"dpkg-query -W -f='${{Status}}' {package}")
    assert out.stdout == "install ok installed"


@pytest.mark.parametrize(
    "line",
    ['GRUB_TERMINAL="console serial"', 'GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"'],
)
def test_grub_serial_console_configured(host, image_root, line):
    conf = host.run(f"cat {image_root}/etc/default/grub {image_root}/etc/default/grub.d/*.cfg").stdout
    assert line in conf.splitlines()


def test_grub_cfg_uses_serial_terminal(host, image_root):
    cfg = host.file(f"{image_root}/boot/grub/grub.cfg").content_string
    assert "terminal_output console serial" in cfg or "terminal_output serial console" in cfg
    assert "console=ttyS0" in cfg


def test_root_fs_by_label_or_uuid(host, image_root):
    cfg = host.file(f"{image_root}/boot/grub/grub.cfg").content_string
    assert "root=/dev/loop" not in cfg


def test_security_upgrades_recorded(image_root):
    """The build's security upgrade step ran to the end (it stops the build while an upgrade is pending)."""
    stamp = image_root / "var/lib/lcs/security-upgrades"
    assert stamp.is_file()
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+ package\(s\) upgraded\)$", stamp.read_text().strip())
