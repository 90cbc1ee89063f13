"""Image pipeline: build the base, bake the Jupyter image with Packer, test it, publish it (issue 3).

    invoke build-base --os debian-12          base qcow2 from Debian packages (mmdebstrap), when no cloud
                                              image can be downloaded
    invoke build-image --os debian-12         Packer build, artifact checks, image tests, manifest entry
    invoke test-image [--image PATH]          tests/images/: offline on the file, then booted with QEMU
    invoke publish-image --cloud devcloud     upload to Glance with properties, record the image id
    invoke validate                           packer validate + fmt for every OS, shellcheck

Artifacts go to images/output/ (gitignored); images/manifest.json records every build.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

from invoke import Exit, task

ROOT = Path(__file__).resolve().parent.parent
PACKER_DIR = ROOT / "images" / "packer"
OUTPUT_DIR = ROOT / "images" / "output"
MANIFEST_PATH = ROOT / "images" / "manifest.json"
TESTS_DIR = ROOT / "tests" / "images"

OSES = ("debian-12", "ubuntu-22.04")
#: OSes whose base can be built here from packages when the official cloud image is out of reach
BASE_RECIPES = {"debian-12": PACKER_DIR / "base" / "debian-12.sh"}
STACK = ("jupyterhub", "jupyterlab", "numpy", "matplotlib")
SCHEMA = 1

#: command -> Debian package that provides it
TOOLS = {
    "packer": "packer",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap",
    "cloud-localds": "cloud-image-utils",
    "shellcheck": "shellcheck",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "sfdisk": "fdisk",
    "partx": "util-linux",
    "losetup": "mount",
    "fsfreeze": "util-linux",
    "mkfs.ext4": "e2fsprogs",
    "chroot": "coreutils",
}
APT_PACKAGES = sorted(set(TOOLS.values()) - {"coreutils", "util-linux", "mount"})


# --- small helpers ---------------------------------------------------------------------------------------


#: the environment (build_image's `--os` parameter shadows the os module inside it)
_ENV = os.environ


def _need(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pkgs = " ".join(sorted({TOOLS.get(t, t) for t in missing}))
        raise Exit(f"{', '.join(missing)} not found: install it with `apt-get install {pkgs}` (./bootstrap does)")


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise Exit(f"{what} needs root (loop devices, mounts, chroot): run it as root")


def _pty() -> bool:
    """A pty only when a person watches: CI has no tty."""
    return sys.stdout.isatty()


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _git_commit(c) -> str:
    r = c.run(f"git -C {_q(ROOT)} rev-parse HEAD", hide=True, warn=True)
    sha = r.stdout.strip() if r.ok else ""
    return sha if re.fullmatch(r"[0-9a-f]{40}", sha) else "unknown"


def _os_vars(os_name: str) -> dict[str, str]:
    """The `key = "value"` lines of vars/<os>.pkrvars.hcl (the OS data shared with Packer)."""
    if os_name not in OSES:
        raise Exit(f"unknown --os {os_name!r}: choose one of {', '.join(OSES)}")
    text = (PACKER_DIR / "vars" / f"{os_name}.pkrvars.hcl").read_text()
    return dict(re.findall(r'^\s*([a-z_]+)\s*=\s*"([^"]*)"', text, flags=re.M))


def _probe_url(url: str, timeout_s: float = 15) -> str | None:
    """None when ``url`` answers; else why not, in words."""
    req = urllib.request.Request(url, method="HEAD")  # noqa: S310 - http(s) URLs from our var files
    try:
        with urllib.request.urlopen(req, timeout=timeout_s):  # noqa: S310
            return None
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code} {e.reason}"
    except (urllib.error.URLError, OSError) as e:
        return str(getattr(e, "reason", e))


def _timed(c, cmd: str, **kw) -> float:
    start = time.monotonic()
    c.run(cmd, **kw)
    return time.monotonic() - start


def _qemu_img_info(c, path: Path) -> dict:
    return json.loads(c.run(f"qemu-img info --output=json {_q(path)}", hide=True).stdout)


# --- manifest --------------------------------------------------------------------------------------------


def load_manifest(path: Path | None = None) -> dict:
    path = path or MANIFEST_PATH  # looked up at call time: tests point it elsewhere
    if not path.exists():
        return {"schema": SCHEMA, "images": []}
    data = json.loads(path.read_text())
    if data.get("schema") != SCHEMA or not isinstance(data.get("images"), list):
        raise Exit(f"{path} is not a schema {SCHEMA} image manifest")
    return data


def save_manifest(data: dict, path: Path | None = None) -> None:
    """Write atomically (the spawner may be reading it)."""
    path = path or MANIFEST_PATH
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)


def manifest_entry(
    *, name: str, os_name: str, versions: dict, date: dt.datetime, git_commit: str, builder: str,
    image: Path | None, sizes: dict, sha256: str | None, min_disk_gb: int, min_ram_mb: int,
) -> dict:  # fmt: skip
    """One build, in the schema the spawner's catalog reads."""
    pretty = {"debian": "Debian", "ubuntu": "Ubuntu"}
    family, _, release = os_name.partition("-")
    return {
        "name": name,
        "os": os_name,
        "display_name": f"{pretty.get(family, family.title())} {release} · JupyterLab {versions['jupyterlab']}",
        "date": date.isoformat().replace("+00:00", "Z"),
        "git_commit": git_commit,
        "versions": {k: versions[k] for k in ("python", *STACK)},
        "format": "qcow2",
        "path": image.relative_to(ROOT).as_posix() if image else None,
        "size_bytes": sizes.get("size_bytes"),
        "virtual_size_bytes": sizes.get("virtual_size_bytes"),
        "compressed_size_bytes": sizes.get("compressed_size_bytes"),
        "sha256": sha256,
        "builder": builder,
        "min_disk_gb": min_disk_gb,
        "min_ram_mb": min_ram_mb,
        "published": {},
    }


def _find_entry(data: dict, image: Path) -> dict | None:
    rel = image.resolve().relative_to(ROOT).as_posix() if image.resolve().is_relative_to(ROOT) else str(image)
    for entry in reversed(data["images"]):
        if entry.get("path") == rel:
            return entry
    return None


def _default_image() -> Path:
    for entry in reversed(load_manifest()["images"]):
        if entry.get("path") and (ROOT / entry["path"]).exists():
            return ROOT / entry["path"]
    raise Exit("no built image in images/manifest.json: run `invoke build-image` or pass --image PATH")


# --- accelerator ------------------------------------------------------------------------------------------


def _kvm_boots(c, probe_image: Path, deadline_s: float = 60) -> tuple[bool, str]:
    """Boot ``probe_image`` (snapshot) under KVM and watch its serial console for the kernel's banner."""
    with tempfile.TemporaryDirectory(prefix="lcs-kvm-probe-") as tmp:
        log = Path(tmp) / "console.log"
        proc = subprocess.Popen(
            ["qemu-system-x86_64", "-nodefaults", "-machine", "pc,accel=kvm", "-cpu", "host", "-m", "512",
             "-display", "none", "-serial", f"file:{log}", "-snapshot",
             "-drive", f"file={probe_image},format=qcow2,if=virtio"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        start = time.monotonic()
        try:
            while time.monotonic() - start < deadline_s:
                if proc.poll() is not None:
                    out = proc.stdout.read().decode(errors="replace").strip().splitlines()
                    return False, f"QEMU exited under KVM: {out[-1] if out else proc.returncode}"
                text = log.read_text(errors="replace") if log.exists() else ""
                if "Linux version" in text:
                    return True, f"a kernel booted under KVM in {time.monotonic() - start:.0f} s"
                time.sleep(1)
            return False, f"no kernel output under KVM within {deadline_s:.0f} s (stuck in the boot loader)"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def resolve_accelerator(c, requested: str, os_name: str = "debian-12") -> str:
    """kvm or tcg. ``auto``: KVM only if a real smoke boot of a stock kernel works (cached per kernel)."""
    if requested in ("kvm", "tcg"):
        return requested
    if requested != "auto":
        raise Exit(f"--accelerator must be auto, kvm or tcg, not {requested!r}")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("accelerator: tcg (no usable /dev/kvm)")
        return "tcg"
    probe = OUTPUT_DIR / "base" / f"{os_name}.qcow2"
    if not probe.exists():
        probe = next(iter(sorted((OUTPUT_DIR / "base").glob("*.qcow2"))), None) if OUTPUT_DIR.exists() else None
    if probe is None:
        print("accelerator: tcg (no local image to smoke-boot KVM with; pass --accelerator kvm to force it)")
        return "tcg"
    cache = OUTPUT_DIR / ".accelerator-probe.json"
    key = f"{os.uname().release} {c.run('qemu-system-x86_64 --version', hide=True).stdout.splitlines()[0]}"
    with contextlib.suppress(OSError, ValueError):
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            print(f"accelerator: {cached['accelerator']} ({cached['reason']}; cached, delete {cache} to re-probe)")
            return cached["accelerator"]
    print("accelerator: probing whether KVM boots a stock kernel here (up to 60 s)...", flush=True)
    ok, reason = _kvm_boots(c, probe)
    accel = "kvm" if ok else "tcg"
    cache.write_text(json.dumps({"key": key, "accelerator": accel, "reason": reason}))
    print(f"accelerator: {accel} ({reason})")
    return accel


# --- base image -------------------------------------------------------------------------------------------


def _base_paths(os_name: str) -> tuple[Path, Path]:
    base = OUTPUT_DIR / "base" / f"{os_name}.qcow2"
    return base, base.with_suffix(".json")


def _base_valid(c, os_name: str) -> tuple[bool, str]:
    base, stamp = _base_paths(os_name)
    if not base.exists() or not stamp.exists():
        return False, "no base built yet"
    meta = json.loads(stamp.read_text())
    if meta.get("recipe_sha256") != _sha256(BASE_RECIPES[os_name]):
        return False, "the recipe changed since the base was built"
    if c.run(f"qemu-img check -q {_q(base)}", hide=True, warn=True).failed:
        return False, "qemu-img check fails"
    if meta.get("sha256") != _sha256(base):
        return False, "the base file changed since it was built"
    return True, f"built {meta.get('date')}"


@task(
    help={
        "os": f"which OS base to build ({', '.join(BASE_RECIPES)})",
        "force": "rebuild even if a valid base exists",
    }
)
def build_base(c, os="debian-12", force=False):
    """Build the local base image from OS packages (mmdebstrap); used where no cloud image downloads."""
    os_name = os
    if os_name not in BASE_RECIPES:
        vars_ = _os_vars(os_name)
        raise Exit(
            f"no local base recipe for {os_name}: its build starts from the official cloud image "
            f"{vars_.get('base_image_url')}"
        )
    _need("mmdebstrap", "qemu-img", "sfdisk", "partx", "losetup", "fsfreeze", "mkfs.ext4", "chroot")
    base, stamp = _base_paths(os_name)
    ok, why = _base_valid(c, os_name)
    if ok and not force:
        print(f"build-base: {base.relative_to(ROOT)} is valid ({why}); --force rebuilds it")
        return base
    _need_root("build-base")
    print(f"build-base: building {base.relative_to(ROOT)} ({why})", flush=True)
    base.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lcs-base-", dir="/var/tmp") as work:
        seconds = _timed(c, f"sh {_q(BASE_RECIPES[os_name])} {_q(base)} {_q(work)}", echo=True, pty=_pty())
    c.run(f"qemu-img check -q {_q(base)}", hide=True)
    stamp.write_text(
        json.dumps(
            {
                "os": os_name,
                "date": _now().isoformat(),
                "sha256": _sha256(base),
                "recipe_sha256": _sha256(BASE_RECIPES[os_name]),
                "build_seconds": round(seconds),
            },
            indent=2,
        )
    )
    print(f"build-base: {base.relative_to(ROOT)} built in {seconds:.0f} s")
    return base


# --- Packer ------------------------------------------------------------------------------------------------


def _packer_version(c, packer: str) -> tuple[int, int, int]:
    out = c.run(f"{_q(packer)} version", hide=True, env={"CHECKPOINT_DISABLE": "1"}).stdout
    m = re.search(r"v?(\d+)\.(\d+)\.(\d+)", out)
    if not m:
        raise Exit(f"cannot read the version of {packer}: {out!r}")
    return int(m[1]), int(m[2]), int(m[3])


def _packers() -> list[str]:
    """Packer binaries to use: `packer` on PATH, plus any listed in LCS_PACKER (':'-separated)."""
    found = [p for p in (os.environ.get("LCS_PACKER", "").split(":")) if p and shutil.which(p)]
    if shutil.which("packer"):
        found.insert(0, shutil.which("packer"))
    return list(dict.fromkeys(found))


@contextlib.contextmanager
def _template(c, packer: str) -> Iterator[Path]:
    """The template directory for this Packer: a copy without plugins.pkr.hcl for Packer < 1.7 (which does
    not know `required_plugins`); with it, after `packer init`, for current Packer."""
    version = _packer_version(c, packer)
    with tempfile.TemporaryDirectory(prefix="lcs-packer-") as tmp:
        dest = Path(tmp) / "packer"
        shutil.copytree(PACKER_DIR, dest, ignore=shutil.ignore_patterns("base"))
        if version < (1, 7, 0):
            (dest / "plugins.pkr.hcl").unlink()
        else:
            with c.cd(str(dest)):
                c.run(f"{_q(packer)} init .", echo=True, pty=False)
        yield dest


class _FakeKeystone:
    """A loopback stand-in for Keystone, only for `packer validate`: Packer 1.6.6's openstack source
    authenticates while validating. Answers the token request; nothing else exists."""

    def __enter__(self):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                port = self.server.server_address[1]
                body = json.dumps(
                    {
                        "token": {
                            "expires_at": "2099-01-01T00:00:00.000000Z",
                            "methods": ["password"],
                            "user": {"id": "validate", "name": "validate", "domain": {"id": "default"}},
                            "project": {"id": "validate", "name": "validate", "domain": {"id": "default"}},
                            "catalog": [
                                {
                                    "type": t,
                                    "name": t,
                                    "endpoints": [
                                        {"interface": "public", "region": "RegionOne", "region_id": "RegionOne",
                                         "url": f"http://127.0.0.1:{port}/{t}"}
                                    ],
                                }
                                for t in ("compute", "image", "network", "identity", "volumev3")
                            ],
                        }
                    }
                ).encode()  # fmt: skip
                self.send_response(201)
                self.send_header("X-Subject-Token", "validate")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.tmp = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        port = self.server.server_address[1]
        self.tmp.write(
            "clouds:\n  validate:\n    auth:\n"
            f"      auth_url: http://127.0.0.1:{port}/v3\n"
            "      username: validate\n      password: validate\n      project_name: validate\n"
            "      user_domain_name: Default\n      project_domain_name: Default\n"
            "    region_name: RegionOne\n"
        )
        self.tmp.close()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        Path(self.tmp.name).unlink(missing_ok=True)


@task(help={"os": "validate only this OS (default: every OS var file)"})
def validate(c, os=""):
    """Validate the Packer templates (every OS, every Packer installed) and shellcheck the scripts."""
    _need("packer", "shellcheck")
    oses = [os] if os else list(OSES)
    for o in oses:
        _os_vars(o)
    scripts = sorted(str(p) for p in PACKER_DIR.rglob("*.sh"))
    c.run("shellcheck -s sh " + " ".join(_q(s) for s in scripts), echo=True, pty=False)
    failures = []
    with tempfile.TemporaryDirectory(prefix="lcs-validate-") as tmp, _FakeKeystone() as keystone:
        wheelhouse = Path(tmp) / "wheelhouse"
        wheelhouse.mkdir()
        for packer in _packers():
            version = ".".join(map(str, _packer_version(c, packer)))
            with _template(c, packer) as tpl, c.cd(str(tpl)):
                r = c.run(f"{_q(packer)} fmt -check -diff .", echo=True, warn=True, pty=False)
                ok = r.ok
                for o in oses:
                    r = c.run(f"{_q(packer)} fmt -check -diff vars/{o}.pkrvars.hcl", echo=True, warn=True, pty=False)
                    ok &= r.ok
                    args = [
                        f"-var-file=vars/{o}.pkrvars.hcl",
                        f"-var=image_name={o}-jupyter-validate",
                        f"-var=wheelhouse_directory={wheelhouse}",
                        f"-var=requirements_lock=files/requirements-{o}.lock",
                        "-var=openstack_cloud=validate",
                    ]
                    r = c.run(
                        f"{_q(packer)} validate {' '.join(_q(a) for a in args)} .",
                        echo=True,
                        warn=True,
                        pty=False,
                        env={"OS_CLIENT_CONFIG_FILE": keystone.tmp.name, "CHECKPOINT_DISABLE": "1"},
                    )
                    ok &= r.ok
                    print(f"validate: Packer {version}, {o}: {'ok' if r.ok else 'FAILED'}")
                if not ok:
                    failures.append(f"Packer {version}")
    if failures:
        raise Exit(f"validate failed for: {', '.join(failures)}")
    print(f"validate: templates valid for {', '.join(oses)} with {len(_packers())} Packer flavour(s); "
          "scripts shellcheck-clean")  # fmt: skip


# --- wheelhouse --------------------------------------------------------------------------------------------


def _lock_path(os_name: str) -> Path:
    return PACKER_DIR / "files" / f"requirements-{os_name}.lock"


def _locked_versions(os_name: str) -> dict[str, str]:
    text = _lock_path(os_name).read_text()
    return {d: m[1] for d in STACK if (m := re.search(rf"^{d}==([^\s;\\]+)", text, flags=re.M))}


def _wheelhouse_locks(os_name: str) -> list[Path]:
    return [_lock_path(os_name), PACKER_DIR / "files" / "build-tools.lock"]


def _wheelhouse_dir(os_name: str) -> Path:
    """Where the wheelhouse of the current locks lives (named by their digest)."""
    digest = hashlib.sha256(b"".join(_sha256(lock).encode() for lock in _wheelhouse_locks(os_name))).hexdigest()
    return OUTPUT_DIR / "wheelhouse" / f"{os_name}-{digest[:12]}"


def _wheelhouse(c, os_name: str, vars_: dict[str, str]) -> Path:
    """The pinned wheels for the guest's Python (the Jupyter lock plus the build-tools lock), downloaded on
    the host and checked against the locks' hashes. Cached per lock content."""
    locks = _wheelhouse_locks(os_name)
    dest = _wheelhouse_dir(os_name)
    digest = dest.name.rsplit("-", 1)[1]
    if (dest / ".complete").exists():
        print(f"wheelhouse: {dest.relative_to(ROOT)} (cached)")
        return dest
    pyver = vars_["guest_python_version"]
    major, minor, _ = pyver.split(".")
    glibc_minor = int(vars_["guest_glibc_version"].split(".")[1])
    platforms = [f"manylinux_2_{n}_x86_64" for n in range(glibc_minor, 16, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # --isolated: only PyPI and the lock count, not this host's pip configuration (extra indexes, find-links)
    cert = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    cert_opt = f"--cert {_q(cert)} " if cert else ""
    for lock in locks:
        cmd = (
            f"{_q(sys.executable)} -m pip --isolated download {cert_opt}--quiet --no-deps --require-hashes "
            f"--only-binary=:all: --implementation cp --python-version {_q(pyver)} --abi cp{major}{minor} "
            + " ".join(f"--platform {p}" for p in platforms)
            + f" --dest {_q(tmp)} -r {_q(lock)}"
        )
        print(f"wheelhouse: downloading the wheels of {lock.relative_to(ROOT)} for Python {pyver}", flush=True)
        c.run(cmd, echo=True, pty=False)
    (tmp / ".complete").write_text(digest + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


# --- host-speed pre-stage -------------------------------------------------------------------------------

#: the provisioning scripts that also run in the chroot pre-stage (GRUB and cleanup need the booted guest)
PRESTAGE_SCRIPTS = ("common/10-packages.sh", "{family}/20-os.sh", "common/30-jupyter.sh")


def _prebake(c, base: Path, os_name: str, vars_: dict[str, str], wheelhouse: Path) -> Path:
    """Run the provisioning scripts that do the heavy lifting in a chroot of the base, at host speed.

    Under software emulation installing the stack in the guest takes many minutes; here it takes seconds.
    Packer then boots the result and runs every script again: they are idempotent, so the guest only checks
    the installed stack against the lock, configures GRUB and cleans up. Cached per base, locks and scripts.
    """
    _need_root("the chroot pre-stage (--prebake)")
    _need("qemu-img", "losetup", "partx", "fsfreeze", "chroot")
    scripts = [PACKER_DIR / "scripts" / s.format(family=vars_["os_family"]) for s in PRESTAGE_SCRIPTS]
    locks = [_lock_path(os_name), PACKER_DIR / "files" / "build-tools.lock"]
    helpers = [PACKER_DIR / "files" / "lcs_startup.py", PACKER_DIR / "files" / "lcs_start_edits.py"]
    key = hashlib.sha256("".join(_sha256(p) for p in [base, *locks, *helpers, *scripts]).encode()).hexdigest()[:12]
    out = OUTPUT_DIR / "prebaked" / f"{os_name}-{key}.qcow2"
    if out.exists() and c.run(f"qemu-img check -q {_q(out)}", hide=True, warn=True).ok:
        print(f"prebake: {out.relative_to(ROOT)} (cached)")
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    for old in out.parent.glob(f"{os_name}-*.qcow2"):
        old.unlink()
    work = Path(tempfile.mkdtemp(prefix="lcs-prebake-", dir="/var/tmp"))
    raw, mnt = work / "disk.raw", work / "root"
    mnt.mkdir()
    loop = ""
    t0 = time.monotonic()
    print(f"prebake: running {', '.join(s.name for s in scripts)} in a chroot of {base.name}", flush=True)
    try:
        c.run(f"qemu-img convert -O raw {_q(base)} {_q(raw)}", hide=True)
        loop = c.run(f"losetup -f --show {_q(raw)}", hide=True).stdout.strip()
        c.run(f"partx -d {_q(loop)}", hide=True, warn=True)
        c.run(f"partx -a {_q(loop)}", hide=True)
        deadline = time.monotonic() + 15
        while not Path(f"{loop}p1").exists():
            if time.monotonic() > deadline:
                raise Exit(f"{loop}p1 did not appear after partx -a")
            time.sleep(0.5)
        c.run(f"mount {_q(loop + 'p1')} {_q(mnt)}", hide=True)
        c.run(f"mount --make-rshared {_q(mnt)}", hide=True)
        for d in ("dev", "proc", "sys"):
            c.run(f"mount --rbind /{d} {_q(mnt / d)} && mount --make-rslave {_q(mnt / d)}", hide=True)
        build = mnt / "tmp" / "lcs-build"
        shutil.copytree(wheelhouse, build / "wheelhouse")
        shutil.copy(locks[0], build / "requirements.lock")
        shutil.copy(locks[1], build / "build-tools.lock")
        for helper in helpers:
            shutil.copy(helper, build / helper.name)
        (build / "scripts").mkdir()
        for script in scripts:
            shutil.copy(script, build / "scripts" / script.name)
            c.run(
                f"env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "
                f"DEBIAN_FRONTEND=noninteractive LCS_BUILD_DIR=/tmp/lcs-build "
                f"chroot {_q(mnt)} sh -eu /tmp/lcs-build/scripts/{script.name}",
                echo=True,
                pty=False,
            )
        shutil.rmtree(build)
        for d in ("dev", "proc", "sys"):
            c.run(f"umount -R {_q(mnt / d)}", hide=True)
        c.run(f"fstrim {_q(mnt)}", hide=True, warn=True)
        # freeze = flushed and consistent, even if another mount namespace still pins the mount
        c.run(f"sync -f {_q(mnt)} && fsfreeze -f {_q(mnt)}", hide=True)
        try:
            c.run(f"qemu-img convert -O qcow2 {_q(raw)} {_q(str(out) + '.tmp')}", hide=True)
        finally:
            c.run(f"fsfreeze -u {_q(mnt)}", hide=True, warn=True)
        Path(str(out) + ".tmp").rename(out)
    finally:
        for d in ("dev", "proc", "sys"):
            c.run(f"umount -R {_q(mnt / d)}", hide=True, warn=True)
        c.run(f"umount {_q(mnt)}", hide=True, warn=True)
        if loop:
            c.run(f"partx -d {_q(loop)}", hide=True, warn=True)
            c.run(f"losetup -d {_q(loop)}", hide=True, warn=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"prebake: {out.relative_to(ROOT)} in {time.monotonic() - t0:.0f} s")
    return out


# --- image checks -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _mounted_image(c, image: Path) -> Iterator[Path]:
    """The image's root filesystem, mounted read-only from a raw conversion (never the image itself)."""
    _need_root("mounting an image")
    _need("qemu-img", "losetup", "partx")
    work = Path(tempfile.mkdtemp(prefix="lcs-image-mount-", dir="/var/tmp"))
    raw, mnt = work / "disk.raw", work / "root"
    mnt.mkdir()
    loop = ""
    try:
        c.run(f"qemu-img convert -O raw {_q(image)} {_q(raw)}", hide=True)
        loop = c.run(f"losetup -r -f --show {_q(raw)}", hide=True).stdout.strip()
        c.run(f"partx -d {_q(loop)}", hide=True, warn=True)
        c.run(f"partx -a {_q(loop)}", hide=True)
        deadline = time.monotonic() + 15
        while not Path(f"{loop}p1").exists():
            if time.monotonic() > deadline:
                raise Exit(f"{loop}p1 did not appear after partx -a")
            time.sleep(0.5)
        c.run(f"mount -o ro,noload {_q(loop + 'p1')} {_q(mnt)}", hide=True)
        yield mnt
    finally:
        c.run(f"umount {_q(mnt)}", hide=True, warn=True)
        if loop:
            c.run(f"partx -d {_q(loop)}", hide=True, warn=True)
            c.run(f"losetup -d {_q(loop)}", hide=True, warn=True)
        shutil.rmtree(work, ignore_errors=True)


def _image_versions(c, root: Path) -> dict[str, str]:
    """The Jupyter stack's versions, read from the image itself."""
    code = (
        "import json, platform, importlib.metadata as m; "
        f"print(json.dumps({{'python': platform.python_version(), **{{d: m.version(d) for d in {list(STACK)!r}}}}}))"
    )
    r = c.run(
        f"env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot {_q(root)} /opt/jupyter/bin/python -I -c {_q(code)}",
        hide=True,
        warn=True,
    )
    if r.failed:
        raise Exit(f"cannot read the Jupyter stack versions from the image: {r.stderr.strip()}")
    return json.loads(r.stdout)


def _pytest(c, args: list[str], what: str) -> None:
    cmd = f"{_q(sys.executable)} -m pytest -p no:cacheprovider -o testpaths= -rA {' '.join(_q(a) for a in args)}"
    with c.cd(str(ROOT)):
        r = c.run(cmd, echo=True, warn=True, pty=_pty(), env={"PYTHONPATH": str(ROOT / "spawner")})
    if r.exited == 5:
        raise Exit(f"{what}: pytest collected no tests: a test phase that tests nothing is a failure", code=1)
    if r.exited != 0:
        raise Exit(f"{what}: FAILED (pytest exit {r.exited})", code=r.exited or 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _test_offline(c, image: Path) -> dict[str, str]:
    with _mounted_image(c, image) as root:
        versions = _image_versions(c, root)
        _pytest(c, [str(TESTS_DIR / "test_offline.py"), "--hosts=local://", f"--image-root={root}"], "offline tests")
    return versions


def _test_booted(c, image: Path, accelerator: str, keep_dir: str = "") -> None:
    _need("qemu-system-x86_64", "qemu-img", "cloud-localds", "ssh", "ssh-keygen")
    with tempfile.TemporaryDirectory(prefix="lcs-image-test-") as tmp:
        key = Path(tmp) / "id_ed25519"
        c.run(f"ssh-keygen -q -t ed25519 -N '' -C lcs-image-test -f {_q(key)}", hide=True)
        ssh_config = Path(tmp) / "ssh_config"
        ssh_config.write_text(
            "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
            "  ConnectTimeout 20\n  ServerAliveInterval 15\n  IdentitiesOnly yes\n"
        )
        ssh_port, su_port = _free_port(), _free_port()
        args = [
            str(TESTS_DIR / "test_booted.py"),
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
        _pytest(c, args, "booted tests")


def _run_image_tests(c, image: Path, accelerator: str, phase: str = "all", keep_dir: str = "") -> dict | None:
    versions = None
    if phase in ("all", "offline"):
        print(f"=== image tests, offline: {image}", flush=True)
        versions = _test_offline(c, image)
    if phase in ("all", "booted"):
        print(f"=== image tests, booted ({accelerator}): {image}", flush=True)
        _test_booted(c, image, accelerator, keep_dir)
    return versions


@task(
    help={
        "image": "qcow2 to test (default: the newest image in images/manifest.json)",
        "accelerator": "auto (probe whether KVM boots a guest), kvm or tcg",
        "phase": "all, offline (the file before first boot) or booted (QEMU + the spawner's user-data)",
        "keep_vm_dir": "keep the test VM's console log and seed in this directory",
    }
)
def test_image(c, image="", accelerator="auto", phase="all", keep_vm_dir=""):
    """Run the image tests (tests/images/): offline on the file, then booted with QEMU."""
    if phase not in ("all", "offline", "booted"):
        raise Exit("--phase must be all, offline or booted")
    path = Path(image).resolve() if image else _default_image()
    if not path.exists():
        raise Exit(f"{path} does not exist")
    _need("qemu-img")
    c.run(f"qemu-img check -q {_q(path)}", hide=True)
    accel = resolve_accelerator(c, accelerator) if phase != "offline" else "tcg"
    _run_image_tests(c, path, accel, phase, keep_vm_dir)
    print(f"test-image: {path.name} passed ({phase})")


# --- build -------------------------------------------------------------------------------------------------


def _explain_unbuildable(os_name: str, vars_: dict[str, str], reason: str | None) -> Exit:
    """Why ``os_name`` cannot be built here; ``reason`` is the probe's error, None when no probe was made."""
    host = vars_["base_image_url"].split("/")[2]
    where = (
        f"    is unreachable from here: {reason};"
        if reason
        else "    was not tried (--base local, or LCS_IMAGE_BASE=local: no request to its host);"
    )
    how = "the same command builds it" if reason else "`--base auto` (or official) builds it"
    return Exit(
        "\n".join(
            [
                f"build-image: {os_name} cannot be built on this machine.",
                f"  - its base, the official cloud image {vars_['base_image_url']},",
                where,
                f"  - there is no local base recipe for {os_name} (images/packer/base/): one would need the OS's",
                "    own package archive, and this machine's builds may use only Debian's mirror and PyPI.",
                f"  The template is valid (`invoke validate --os {os_name}`). On a machine that reaches {host},",
                f"  {how}; nothing else changes.",
            ]
        ),
        code=2,
    )


def _unique_name(os_name: str, date: dt.datetime, commit: str) -> str:
    base = f"{os_name}-jupyter-{date:%Y%m%d}-{commit[:7] if commit != 'unknown' else 'nogit'}"
    taken = {e["name"] for e in load_manifest()["images"]}
    name, n = base, 1
    while name in taken or (OUTPUT_DIR / f"{name}.qcow2").exists():
        n += 1
        name = f"{base}-{n}"
    return name


def _write_seed(seed_dir: Path, user: str, pubkey: str) -> None:
    """The NoCloud seed creating the temporary build login (served by Packer's HTTP server)."""
    seed_dir.mkdir(parents=True)
    (seed_dir / "user-data").write_text(
        "#cloud-config\n"
        + json.dumps(
            {
                "users": [
                    {
                        "name": user,
                        "sudo": "ALL=(ALL) NOPASSWD:ALL",
                        "shell": "/bin/sh",
                        "lock_passwd": True,
                        "ssh_authorized_keys": [pubkey.strip()],
                    }
                ],
                "ssh_pwauth": False,
            },
            indent=1,
        )
        + "\n"
    )
    (seed_dir / "meta-data").write_text(
        json.dumps({"instance-id": f"lcs-build-{secrets.token_hex(4)}", "local-hostname": "localhost"}) + "\n"
    )


def _hcl_map(d: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in sorted(d.items())) + "}"


@task(
    help={
        "os": f"which OS to build ({', '.join(OSES)})",
        "builder": "qemu (local qcow2) or openstack (bakes inside a cloud, registers in Glance)",
        "accelerator": "qemu builder: auto (a smoke boot decides whether KVM boots a guest), kvm or tcg",
        "extra_ca": "PEM bundle trusted during the build only (intercepting proxy); removed from the image",
        "skip_tests": "do not run tests/images/ (the artifact is still checked; no manifest entry is written)",
        "base": "qemu builder: auto (the official cloud image if a HEAD request reaches it, else the local base),"
        " official (no probe) or local (build-base from Debian packages, never contacts the image host);"
        " default: $LCS_IMAGE_BASE, else auto",
        "cloud": "openstack builder: clouds.yaml entry",
        "source_image": "openstack builder: name of the base image in Glance",
        "flavor": "openstack builder: flavor of the build instance",
        "network": "openstack builder: network id of the build instance",
        "prebake": "qemu builder: auto (when emulated), yes or no: run the heavy provisioning in a chroot of the"
        " base at host speed first; Packer then runs every script again (idempotent) in the booted guest",
    }
)
def build_image(
    c, os="debian-12", builder="qemu", accelerator="auto", extra_ca="", skip_tests=False,
    cloud="devcloud", source_image="debian-12-base", flavor="m1.small", network="", prebake="auto", base="",
):  # fmt: skip
    """Bake a Jupyter image with Packer, verify and test it, record it in images/manifest.json."""
    os_name = os
    vars_ = _os_vars(os_name)
    if builder not in ("qemu", "openstack"):
        raise Exit("--builder must be qemu or openstack")
    _need("packer", "qemu-img", "ssh-keygen")
    if builder == "qemu":
        _need("qemu-system-x86_64", "cloud-localds")
    if extra_ca and not Path(extra_ca).is_file():
        raise Exit(f"--extra-ca {extra_ca}: no such file")
    started = time.monotonic()
    date = _now()
    commit = _git_commit(c)

    # The base: the official cloud image where it downloads, else the local base from build-base.
    base_url, base_checksum = vars_["base_image_url"], vars_["base_image_checksum"]
    base_mode = base or _ENV.get("LCS_IMAGE_BASE", "") or "auto"
    if base_mode not in ("auto", "official", "local"):
        raise Exit(f"--base (or LCS_IMAGE_BASE) must be auto, official or local, not {base_mode!r}")
    if builder == "qemu" and base_mode != "official":
        unreachable: str | None = None
        if base_mode == "auto":
            print(f"build-image: probing {base_url}", flush=True)
            unreachable = _probe_url(base_url)
        if base_mode == "local" or unreachable:
            if os_name not in BASE_RECIPES:
                raise _explain_unbuildable(os_name, vars_, unreachable)
            if base_mode == "auto":
                print(f"build-image: official image unreachable ({unreachable}); using the local base instead")
            local = build_base(c, os=os_name)
            base_url, base_checksum = f"file://{local}", f"sha256:{_sha256(local)}"

    if builder == "openstack":
        _openstack_preflight(cloud, source_image, flavor, network)
    packer = _packers()[0]
    name = _unique_name(os_name, date, commit)
    versions_locked = _locked_versions(os_name)
    wheelhouse = _wheelhouse(c, os_name, vars_)
    accel = resolve_accelerator(c, accelerator, os_name) if builder == "qemu" else "tcg"
    if prebake not in ("auto", "yes", "no"):
        raise Exit("--prebake must be auto, yes or no")
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"lcs-build-{name}-", dir="/var/tmp"))
    prebake_seconds = 0.0
    if builder == "qemu" and (prebake == "yes" or (prebake == "auto" and accel == "tcg")):
        if not base_url.startswith("file://"):
            base = OUTPUT_DIR / "base" / f"{os_name}.download.qcow2"
            if not base.exists():
                c.run(f"curl -fL --retry 3 -o {_q(base)} {_q(base_url)}", echo=True, pty=_pty())
        else:
            base = Path(base_url.removeprefix("file://"))
        t0 = time.monotonic()
        prebaked = _prebake(c, base, os_name, vars_, wheelhouse)
        prebake_seconds = time.monotonic() - t0
        base_url, base_checksum = f"file://{prebaked}", f"sha256:{_sha256(prebaked)}"
        # The stack is installed already (stamp = this lock): the guest only verifies it, needs no wheels.
        wheelhouse = work / "wheelhouse-empty"
        wheelhouse.mkdir()
        (wheelhouse / "README").write_text("prebaked: the stack was installed in the chroot pre-stage\n")
    try:
        key = work / "build_key"
        c.run(f"ssh-keygen -q -t ed25519 -N '' -C lcs-build -f {_q(key)}", hide=True)
        _write_seed(work / "seed", "lcs-build", (work / "build_key.pub").read_text())
        ca = Path(extra_ca).resolve() if extra_ca else None
        pvars = {
            "image_name": name,
            "accelerator": accel,
            "output_directory": work / "out",
            "seed_directory": work / "seed",
            "ssh_private_key_file": key,
            "serial_log": work / "build-console.log",
            "wheelhouse_directory": wheelhouse,
            "requirements_lock": _lock_path(os_name),
            "git_commit": commit,
            "build_date": date.isoformat(),
            "jupyter_versions": _hcl_map({"python": vars_["guest_python_version"], **versions_locked}),
            "base_image_url": base_url,
            "base_image_checksum": base_checksum,
        }
        if ca:
            pvars["extra_ca_bundle"] = ca
        if builder == "openstack":
            # always given: Packer builds from exactly what the pre-flight checked
            pvars.update(openstack_cloud=cloud, openstack_source_image=source_image, openstack_flavor=flavor)
            if network:
                pvars["openstack_networks"] = f'["{network}"]'
        args = " ".join(_q(f"-var={k}={v}") for k, v in pvars.items())
        env = {"CHECKPOINT_DISABLE": "1", "PACKER_CACHE_DIR": str(OUTPUT_DIR / "packer_cache")}
        print(f"build-image: {name} with {packer} ({builder}, {accel})", flush=True)
        with _template(c, packer) as tpl, c.cd(str(tpl)):
            t0 = time.monotonic()
            r = c.run(
                f"{_q(packer)} build -timestamp-ui -only={builder}.image -var-file=vars/{os_name}.pkrvars.hcl {args} .",
                echo=True,
                pty=_pty(),
                warn=True,
                env=env,
            )
            packer_seconds = time.monotonic() - t0
        if r.failed:
            tail = ""
            log = work / "build-console.log"
            if log.exists():
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise Exit(f"build-image: Packer failed (exit {r.exited}). Build VM console, last lines:\n{tail}")

        if builder == "openstack":
            m = re.search(r"An image was created: ([0-9a-f-]{36})", r.stdout)
            image_id = m[1] if m else "unknown"
            entry = manifest_entry(
                name=name, os_name=os_name, versions={"python": vars_["guest_python_version"], **versions_locked},
                date=date, git_commit=commit, builder="openstack", image=None, sizes={}, sha256=None,
                min_disk_gb=8, min_ram_mb=1024,
            )  # fmt: skip
            entry["published"][cloud] = _published(image_id, name)
            _set_min_ram(cloud, image_id, 1024)
            data = load_manifest()
            data["images"].append(entry)
            save_manifest(data)
            print(f"build-image: {name} registered in {cloud} as {image_id} (booted tests run on local builds)")
            return name

        produced = work / "out" / f"{name}.qcow2"
        if not produced.exists():
            raise Exit(f"build-image: Packer reported success but wrote no {produced.name}")
        image = OUTPUT_DIR / f"{name}.qcow2"
        shutil.move(str(produced), image)
        shutil.copy(work / "build-console.log", OUTPUT_DIR / f"{name}.build-console.log")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # Verify the artifact: a sound qcow2 of the expected size, then the image tests (they boot it).
    if c.run(f"qemu-img check -q {_q(image)}", hide=True, warn=True).failed:
        raise Exit(f"build-image: {image} fails qemu-img check")
    info = _qemu_img_info(c, image)
    measure = json.loads(c.run(f"qemu-img measure --output=json -O qcow2 {_q(image)}", hide=True).stdout)
    sizes = {
        "size_bytes": int(measure["required"]),
        "virtual_size_bytes": int(info["virtual-size"]),
        "compressed_size_bytes": image.stat().st_size,
    }
    if sizes["virtual_size_bytes"] != 8 * 1024**3:
        raise Exit(f"build-image: {image} has a virtual size of {sizes['virtual_size_bytes']}, expected 8 GiB")
    if skip_tests:
        print(f"build-image: {image} built, tests skipped: not recorded in the manifest")
        return name
    tests_t0 = time.monotonic()
    versions = _run_image_tests(c, image, accel)
    tests_seconds = time.monotonic() - tests_t0
    entry = manifest_entry(
        name=name, os_name=os_name, versions=versions, date=date, git_commit=commit, builder="qemu",
        image=image, sizes=sizes, sha256=_sha256(image), min_disk_gb=8, min_ram_mb=1024,
    )  # fmt: skip
    data = load_manifest()
    data["images"].append(entry)
    save_manifest(data)
    total = time.monotonic() - started
    (OUTPUT_DIR / f"{name}.build.json").write_text(
        json.dumps(
            {
                "packer_seconds": round(packer_seconds),
                "tests_seconds": round(tests_seconds),
                "total_seconds": round(total),
                "accelerator": accel,
                "packer": packer,
            },
            indent=2,
        )
    )
    print(
        f"build-image: prebake {prebake_seconds:.0f} s, Packer {packer_seconds:.0f} s, "
        f"tests {tests_seconds:.0f} s, total {total:.0f} s; "
        f"{sizes['compressed_size_bytes'] / 2**20:.0f} MiB compressed, {sizes['size_bytes'] / 2**20:.0f} MiB data"
    )
    print(f"build-image: recorded in {MANIFEST_PATH.relative_to(ROOT)}")
    print(name)
    return name


# --- publish -----------------------------------------------------------------------------------------------


def _connect(cloud: str):
    try:
        import openstack
        import openstack.exceptions
    except ImportError:
        raise Exit("openstacksdk is missing: install it with `pip install openstacksdk` (./bootstrap does)") from None
    try:
        conn = openstack.connect(cloud=cloud)
        conn.authorize()
    except openstack.exceptions.ConfigException as e:
        raise Exit(f"no usable clouds.yaml entry {cloud!r}: {e}") from None
    except openstack.exceptions.SDKException as e:
        raise Exit(f"cannot authenticate to cloud {cloud!r}: {e}") from None
    return conn


def _openstack_preflight(cloud: str, source_image: str, flavor: str, network: str) -> None:
    """Before Packer boots anything: the cloud answers and the source image, flavor and network exist.

    Packer would otherwise fail minutes later (or, for a network, leave Nova to pick one)."""
    import openstack.exceptions

    conn = _connect(cloud)
    problems = []
    try:
        image = conn.image.find_image(source_image, ignore_missing=True)
    except openstack.exceptions.DuplicateResource:
        ids = ", ".join(sorted(i.id for i in conn.image.images(name=source_image)))
        raise Exit(
            f"build-image --builder openstack, cloud {cloud!r}: several images are named {source_image!r}"
            f" ({ids}): pass one by its id"
        ) from None
    if image is None:
        problems.append(
            f"no image {source_image!r} in Glance: upload a base first, e.g. `openstack --os-cloud {cloud} image create"
            f" --disk-format qcow2 --file images/output/base/debian-12.qcow2 {source_image}`"
        )
    elif image.status != "active":
        problems.append(f"image {source_image!r} is {image.status}, not active")
    found = conn.compute.find_flavor(flavor, ignore_missing=True)
    if found is None:
        names = ", ".join(sorted(f.name for f in conn.compute.flavors()))
        problems.append(f"no flavor {flavor!r} (this cloud has: {names})")
    elif image is not None and (image.min_disk or 0) > found.disk:
        problems.append(f"flavor {flavor!r} has a {found.disk} GB disk; the image needs {image.min_disk} GB")
    if network and conn.network.find_network(network, ignore_missing=True) is None:
        problems.append(f"no network {network!r}")
    if problems:
        raise Exit(f"build-image --builder openstack, cloud {cloud!r}:\n  " + "\n  ".join(problems))


def _set_min_ram(cloud: str, image_id: str, min_ram_mb: int) -> None:
    """The openstack builder sets min_disk but not min_ram: set it through the image API."""
    if image_id == "unknown":
        return
    conn = _connect(cloud)
    conn.image.update_image(image_id, min_ram=min_ram_mb)


def _published(image_id: str, name: str) -> dict:
    """A manifest entry's record of one cloud's copy (``published.<cloud>``)."""
    return {"image_id": image_id, "image_name": name, "date": _now().isoformat()}


def _record_published(data: dict, entry: dict, cloud: str, image_id: str, name: str) -> None:
    entry.setdefault("published", {})[cloud] = _published(image_id, name)
    save_manifest(data)


SDK_SHA256_KEY = "owner_specified.openstack.sha256"  # openstacksdk's create_image records the file's sha256 here


class GlanceImage(NamedTuple):
    id: str
    name: str
    status: str
    sha256: str


def glance_target(
    wanted: str, explicit: bool, sha256: str, visible: list[GlanceImage], *, force: bool = False
) -> tuple[str, str | None]:
    """The Glance name to publish a build under, and the id of an image to reuse instead of uploading.

    Glance allows two images of one name, but a name that means two images cannot be configured (the
    spawner and the openstack CLI refuse to guess). So: this very build (same sha256) already active
    under its name or a suffixed one is reused, unless ``force``; a default name taken by another build
    becomes ``NAME-2``, ``NAME-3`` ... (as local builds do); an explicit ``--name`` that is taken is refused.
    """
    family = [i for i in visible if i.name == wanted or re.fullmatch(re.escape(wanted) + r"-\d+", i.name)]
    if not force:
        for image in family:
            if image.sha256 == sha256 and image.status == "active":
                return image.name, image.id
    taken = {i.name for i in visible}
    if wanted not in taken:
        return wanted, None
    if explicit:
        ids = ", ".join(sorted(i.id for i in visible if i.name == wanted))
        raise Exit(
            f"publish-image: the cloud already has an image named {wanted!r} ({ids}) that is not this build:"
            " choose another --name, or delete that image first"
        )
    n = 2
    while f"{wanted}-{n}" in taken:
        n += 1
    return f"{wanted}-{n}", None


@task(
    help={
        "cloud": "clouds.yaml entry to publish to (e.g. devcloud)",
        "image": "qcow2 to upload (default: the newest image in images/manifest.json)",
        "name": "Glance image name (default: the manifest name)",
        "visibility": "Glance visibility: private, shared, community or public",
        "timeout": "seconds to wait for the image to become active",
        "force": "upload again even if the manifest records an active image in this cloud",
    }
)
def publish_image(c, cloud, image="", name="", visibility="private", timeout=1800, force=False):
    """Upload a built qcow2 to Glance with its properties; record the image id in the manifest."""
    path = Path(image).resolve() if image else _default_image()
    data = load_manifest()
    entry = _find_entry(data, path)
    if entry is None:
        raise Exit(f"{path} is not in images/manifest.json: build it with `invoke build-image` first")
    if entry["sha256"] != _sha256(path):
        raise Exit(f"{path} does not match its manifest checksum: rebuild it")
    conn = _connect(cloud)
    already = entry.get("published", {}).get(cloud)
    if already and not force:
        existing = conn.image.find_image(already["image_id"], ignore_missing=True)
        if existing is not None and existing.status == "active":
            print(f"publish-image: already in {cloud} as {existing.id} ({existing.name}); --force uploads again")
            return existing.id
    visible = [
        GlanceImage(i.id, i.name or "", i.status, (i.properties or {}).get(SDK_SHA256_KEY, ""))
        for i in conn.image.images()
    ]
    glance_name, reuse = glance_target(name or entry["name"], bool(name), entry["sha256"], visible, force=force)
    if reuse is not None:
        print(f"publish-image: this build is already in {cloud} as {reuse} ({glance_name}); manifest updated")
        _record_published(data, entry, cloud, reuse, glance_name)
        return reuse
    if glance_name != entry["name"] and not name:
        print(f"publish-image: {entry['name']!r} is taken in {cloud} by another build; publishing as {glance_name!r}")
    vars_ = _os_vars(entry["os"])
    properties = {
        "os_distro": vars_["os_distro"],
        "os_version": vars_["os_version"],
        "os_type": "linux",
        "hw_qemu_guest_agent": "yes",
        "lcs_git_commit": entry["git_commit"],
        "lcs_build_date": entry["date"],
        **{f"lcs_{k}_version": v for k, v in entry["versions"].items()},
    }
    print(f"publish-image: uploading {path.name} to {cloud} as {glance_name}", flush=True)
    import openstack.exceptions

    try:
        img = conn.image.create_image(
            name=glance_name,
            filename=str(path),
            disk_format="qcow2",
            container_format="bare",
            visibility=visibility,
            min_disk=entry["min_disk_gb"],
            min_ram=entry["min_ram_mb"],
            allow_duplicates=True,  # glance_target made the name unique among the images visible to us
            validate_checksum=True,  # the sdk hashes the file: md5 checked by Glance, sha256 kept in SDK_SHA256_KEY
            wait=True,
            timeout=int(timeout),
            **properties,
        )
    except openstack.exceptions.SDKException as e:
        raise Exit(f"publish-image: upload to {cloud} failed: {e}") from None
    _record_published(data, entry, cloud, img.id, glance_name)
    print(f"publish-image: {glance_name} is {img.id} in {cloud} (status {img.status}); manifest updated")
    return img.id


TASKS = [build_base, build_image, test_image, publish_image, validate]
