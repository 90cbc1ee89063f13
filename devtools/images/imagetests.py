"""The image tests (tests/images/) run against a built qcow2: offline on its mounted filesystem, then booted
with QEMU and reached over SSH like a user server."""

from __future__ import annotations

import json
import socket
import sys
import tempfile
from pathlib import Path

from invoke import Exit

from . import disk
from .common import ROOT, STACK, TESTS_DIR, need, q, use_pty


def image_versions(c, root: Path) -> dict[str, str]:
    """The Jupyter stack's versions, read from the image itself."""
    code = (
        "import json, platform, importlib.metadata as m; "
        f"print(json.dumps({{'python': platform.python_version(), **{{d: m.version(d) for d in {list(STACK)!r}}}}}))"
    )
    r = c.run(
        f"env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot {q(root)} /opt/jupyter/bin/python -I -c {q(code)}",
        hide=True,
        warn=True,
    )
    if r.failed:
        raise Exit(f"cannot read the Jupyter stack versions from the image: {r.stderr.strip()}")
    return json.loads(r.stdout)


#: groups whose members may use sudo on Debian (sudo), Ubuntu (sudo, admin) and others (wheel)
SUDO_GROUPS = ("sudo", "admin", "wheel")
SECURITY_STAMP = "var/lib/lcs/security-upgrades"


def image_packages(c, root: Path) -> dict[str, str]:
    """Every installed package of the image and its version, read from its dpkg database."""
    fmt = "${binary:Package}\\t${Version}\\t${db:Status-Abbrev}\\n"
    r = c.run(f"dpkg-query --admindir={q(root / 'var/lib/dpkg')} -W -f={q(fmt)}", hide=True, warn=True)
    if r.failed:
        raise Exit(f"cannot read the installed packages from the image: {r.stderr.strip()}")
    packages = {}
    for line in r.stdout.splitlines():
        name, version, status = line.split("\t")
        if status.startswith("ii"):
            packages[name] = version
    return dict(sorted(packages.items()))


def _sudoers_principals(root: Path) -> set[str]:
    """The users (``name``) and groups (``%name``) a sudoers rule of the image names."""
    files = [root / "etc" / "sudoers", *sorted((root / "etc" / "sudoers.d").glob("*"))]
    names = set()
    for f in files:
        if not f.is_file() or "." in f.name or f.name.endswith("~"):  # sudo skips these in sudoers.d
            continue
        for line in f.read_text(errors="replace").splitlines():
            words = line.split()
            if not words or words[0].startswith(("#", "Defaults", "@")) or words[0].endswith("_Alias"):
                continue
            names.add(words[0])
    return names


def _default_user(root: Path) -> dict | None:
    """cloud-init's default user of the image (``system_info.default_user``; the last file defining it)."""
    import yaml

    found = None
    for f in [root / "etc/cloud/cloud.cfg", *sorted((root / "etc/cloud/cloud.cfg.d").glob("*.cfg"))]:
        try:
            data = yaml.safe_load(f.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        user = (data.get("system_info") or {}).get("default_user") if isinstance(data, dict) else None
        if isinstance(user, dict) and user.get("name"):
            found = user
    return found


def image_accounts(root: Path) -> list[dict]:
    """The image's accounts: every ``/etc/passwd`` entry and cloud-init's default user, each with whether it
    may become root through sudo (a sudoers rule naming it or one of its groups, or a member of a sudo group)."""
    groups: dict[str, tuple[str, set[str]]] = {}  # name -> (gid, members)
    for line in (root / "etc" / "group").read_text().splitlines():
        parts = line.split(":")
        if len(parts) >= 4:
            groups[parts[0]] = (parts[2], {m for m in parts[3].split(",") if m})
    principals = _sudoers_principals(root)
    admin_groups = {g for g in groups if g in SUDO_GROUPS or f"%{g}" in principals}

    def may_sudo(name: str, gid: str | None, extra_groups: set[str] = frozenset()) -> bool:
        member_of = {g for g, (g_gid, members) in groups.items() if name in members or g_gid == gid} | extra_groups
        return name in principals or bool(member_of & admin_groups)

    accounts = []
    for line in (root / "etc" / "passwd").read_text().splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and parts[0]:
            uid = int(parts[2])
            accounts.append({"name": parts[0], "uid": uid, "sudo": uid == 0 or may_sudo(parts[0], parts[3])})
    default = _default_user(root)
    if default and default["name"] not in {a["name"] for a in accounts}:
        extra = default.get("groups") or []
        extra = set(extra.split(",") if isinstance(extra, str) else extra)
        sudo = bool(default.get("sudo")) or may_sudo(default["name"], None, {g.strip() for g in extra})
        accounts.append({"name": default["name"], "uid": None, "sudo": sudo, "source": "cloud-init"})
    return accounts


def image_facts(c, root: Path) -> dict:
    """What the manifest records about the image: stack versions, packages, accounts, security upgrades."""
    stamp = root / SECURITY_STAMP
    return {
        "versions": image_versions(c, root),
        "packages": image_packages(c, root),
        "accounts": image_accounts(root),
        "security_upgrades": stamp.read_text().strip() if stamp.is_file() else None,
    }


def run_pytest(c, args: list[str], what: str) -> None:
    cmd = f"{q(sys.executable)} -m pytest -p no:cacheprovider -o testpaths= -rA {' '.join(q(a) for a in args)}"
    with c.cd(str(ROOT)):
        r = c.run(cmd, echo=True, warn=True, pty=use_pty(), env={"PYTHONPATH": str(ROOT)})
    if r.exited == 5:
        raise Exit(f"{what}: pytest collected no tests: a test phase that tests nothing is a failure", code=1)
    if r.exited != 0:
        raise Exit(f"{what}: FAILED (pytest exit {r.exited})", code=r.exited or 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline_tests(c, image: Path) -> dict:
    """The offline tests; the image's facts (:func:`image_facts`)."""
    with disk.mounted(c, image) as mounted:
        root = mounted.root
        facts = image_facts(c, root)
        run_pytest(c, [str(TESTS_DIR / "test_offline.py"), "--hosts=local://", f"--image-root={root}"], "offline tests")
    return facts


def booted_tests(c, image: Path, accelerator: str, keep_dir: str = "") -> None:
    need("qemu-system-x86_64", "qemu-img", "cloud-localds", "ssh", "ssh-keygen")
    with tempfile.TemporaryDirectory(prefix="lcs-image-test-") as tmp:
        key = Path(tmp) / "id_ed25519"
        c.run(f"ssh-keygen -q -t ed25519 -N '' -C lcs-image-test -f {q(key)}", hide=True)
        ssh_config = Path(tmp) / "ssh_config"
        ssh_config.write_text(
            "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
            "  ConnectTimeout 20\n  ServerAliveInterval 15\n  IdentitiesOnly yes\n"
        )
        ssh_port, su_port = free_port(), free_port()
        args = [
            str(TESTS_DIR / "test_booted.py"),
            str(TESTS_DIR / "test_booted_security.py"),
            f"--hosts=ssh://lcs-test@127.0.0.1:{ssh_port}",
            f"--ssh-config={ssh_config}",
            f"--ssh-identity-file={key}",
            "--sudo",
            f"--image={image}",
            f"--ssh-port={ssh_port}",
            f"--singleuser-port={su_port}",
            f"--accelerator={accelerator}",
            "-s",
        ]
        if keep_dir:
            args.append(f"--vm-workdir={keep_dir}")
        run_pytest(c, args, "booted tests")


def run_image_tests(c, image: Path, accelerator: str, phase: str = "all", keep_dir: str = "") -> dict | None:
    """The tests of ``phase``; the image's facts when the offline phase ran (:func:`image_facts`)."""
    facts = None
    if phase in ("all", "offline"):
        print(f"=== image tests, offline: {image}", flush=True)
        facts = offline_tests(c, image)
    if phase in ("all", "booted"):
        print(f"=== image tests, booted ({accelerator}): {image}", flush=True)
        booted_tests(c, image, accelerator, keep_dir)
    return facts
