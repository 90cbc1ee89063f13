"""`invoke build-image` as a sequence of named steps: check the request, choose the base, resolve the cloud's
ids (openstack builder), plan, pre-stage, run Packer, then register (openstack) or verify, test and record
(qemu)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from invoke import Exit

from . import packer as packer_
from .accelerator import resolve_accelerator
from .base import build_base
from .common import BASE_RECIPES, OUTPUT_DIR, ROOT, git_commit, need, now, os_vars, probe_url, q, sha256, use_pty
from .imagetests import run_image_tests
from .manifest import MANIFEST_PATH, append_entry, build_date, load_manifest, manifest_entry, published
from .prebake import prebake
from .publish import OpenstackBuild, openstack_preflight, set_min_ram
from .wheelhouse import ensure_wheelhouse, lock_path, locked_versions

BUILDERS = ("qemu", "openstack")
BASE_MODES = ("auto", "official", "local")
PREBAKE_MODES = ("auto", "yes", "no")
VIRTUAL_SIZE_BYTES = 8 * 1024**3
MIN_DISK_GB, MIN_RAM_MB = 8, 1024


@dataclass(frozen=True)
class BuildRequest:
    """The task's arguments (see `invoke --help build-image`)."""

    os_name: str = "debian-12"
    builder: str = "qemu"
    accelerator: str = "auto"
    extra_ca: str = ""
    skip_tests: bool = False
    cloud: str = "devcloud"
    source_image: str = "debian-12-base"
    flavor: str = "m1.small"
    network: str = ""
    prebake: str = "auto"
    base: str = ""


@dataclass(frozen=True)
class BuildPlan:
    """What this build was decided to be, step by step."""

    vars: dict[str, str]
    base_url: str
    base_checksum: str
    name: str = ""
    date: dt.datetime = field(default_factory=now)
    commit: str = "unknown"
    packer: str = ""
    accelerator: str = "tcg"
    versions_locked: dict[str, str] = field(default_factory=dict)
    wheelhouse: Path | None = None
    openstack: OpenstackBuild | None = None


def build_image(c, req: BuildRequest) -> str:
    """The whole build; returns the image's name."""
    started = time.monotonic()
    timings: dict[str, float] = {}
    check_request(req)
    plan = choose_base(c, req)
    if req.builder == "openstack":
        plan = dataclasses.replace(plan, openstack=openstack_preflight(req.cloud, req.source_image, req.flavor,
                                                                       req.network))  # fmt: skip
    plan = plan_build(c, req, plan)
    with build_directory(plan) as work:
        plan = prestage(c, req, plan, work, timings)
        output = run_packer(c, req, plan, work, timings)
        if req.builder == "openstack":
            return register_openstack_build(req, plan, output)
        image = collect_artifact(plan, work)
    sizes = verify_artifact(c, image)
    if req.skip_tests:
        print(f"build-image: {image} built, tests skipped: not recorded in the manifest")
        return plan.name
    facts = test_artifact(c, image, plan, timings)
    record_build(req, plan, image, facts, sizes)
    report(plan, image, sizes, timings, time.monotonic() - started)
    return plan.name


# --- the steps ---------------------------------------------------------------------------------------------


def base_mode(req: BuildRequest) -> str:
    return req.base or os.environ.get("LCS_IMAGE_BASE", "") or "auto"


def check_request(req: BuildRequest) -> None:
    """Arguments, tools and files, before anything is downloaded or booted."""
    os_vars(req.os_name)
    if req.builder not in BUILDERS:
        raise Exit("--builder must be qemu or openstack")
    need("packer", "qemu-img", "ssh-keygen")
    if req.builder == "qemu":
        need("qemu-system-x86_64", "cloud-localds")
    if req.extra_ca and not Path(req.extra_ca).is_file():
        raise Exit(f"--extra-ca {req.extra_ca}: no such file")
    if base_mode(req) not in BASE_MODES:
        raise Exit(f"--base (or LCS_IMAGE_BASE) must be auto, official or local, not {base_mode(req)!r}")
    if req.prebake not in PREBAKE_MODES:
        raise Exit("--prebake must be auto, yes or no")


def explain_unbuildable(os_name: str, vars_: dict[str, str], reason: str | None) -> Exit:
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


def choose_base(c, req: BuildRequest) -> BuildPlan:
    """The official cloud image where it downloads, else the local base from build-base."""
    vars_ = os_vars(req.os_name)
    plan = BuildPlan(vars=vars_, base_url=vars_["base_image_url"], base_checksum=vars_["base_image_checksum"])
    mode = base_mode(req)
    if req.builder != "qemu" or mode == "official":
        return plan
    unreachable: str | None = None
    if mode == "auto":
        print(f"build-image: probing {plan.base_url}", flush=True)
        unreachable = probe_url(plan.base_url)
    if mode == "auto" and not unreachable:
        return plan
    if req.os_name not in BASE_RECIPES:
        raise explain_unbuildable(req.os_name, vars_, unreachable)
    if mode == "auto":
        print(f"build-image: official image unreachable ({unreachable}); using the local base instead")
    local = build_base(c, req.os_name)
    return dataclasses.replace(plan, base_url=f"file://{local}", base_checksum=f"sha256:{sha256(local)}")


def unique_name(os_name: str, date: dt.datetime, commit: str, also_taken: frozenset[str] = frozenset()) -> str:
    """The build's name: taken by no manifest entry, no local file and none of ``also_taken`` (for the openstack
    builder, the names the cloud's Glance already shows: a second image of one name could not be configured)."""
    base = f"{os_name}-jupyter-{date:%Y%m%d}-{commit[:7] if commit != 'unknown' else 'nogit'}"
    taken = {e["name"] for e in load_manifest()["images"]} | also_taken
    name, n = base, 1
    while name in taken or (OUTPUT_DIR / f"{name}.qcow2").exists():
        n += 1
        name = f"{base}-{n}"
    return name


def plan_build(c, req: BuildRequest, plan: BuildPlan) -> BuildPlan:
    """Name, Packer binary, locked versions, wheelhouse and accelerator."""
    commit = git_commit(c)
    accel = resolve_accelerator(c, req.accelerator, req.os_name) if req.builder == "qemu" else "tcg"
    return dataclasses.replace(
        plan,
        commit=commit,
        packer=packer_.packers()[0],
        name=unique_name(req.os_name, plan.date, commit, plan.openstack.image_names if plan.openstack else frozenset()),
        versions_locked=locked_versions(req.os_name),
        wheelhouse=ensure_wheelhouse(c, req.os_name, plan.vars),
        accelerator=accel,
    )


@contextmanager
def build_directory(plan: BuildPlan) -> Iterator[Path]:
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"lcs-build-{plan.name}-", dir="/var/tmp"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def prestage(c, req: BuildRequest, plan: BuildPlan, work: Path, timings: dict[str, float]) -> BuildPlan:
    """qemu builder, when emulated (or --prebake yes): the heavy provisioning in a chroot of the base first."""
    if req.builder != "qemu" or not (req.prebake == "yes" or (req.prebake == "auto" and plan.accelerator == "tcg")):
        return plan
    if plan.base_url.startswith("file://"):
        base = Path(plan.base_url.removeprefix("file://"))
    else:
        base = OUTPUT_DIR / "base" / f"{req.os_name}.download.qcow2"
        if not base.exists():
            c.run(f"curl -fL --retry 3 -o {q(base)} {q(plan.base_url)}", echo=True, pty=use_pty())
    t0 = time.monotonic()
    prebaked = prebake(c, base, req.os_name, plan.vars, plan.wheelhouse)
    timings["prebake"] = time.monotonic() - t0
    # The stack is installed already (stamp = this lock): the guest only verifies it, needs no wheels.
    wheelhouse = work / "wheelhouse-empty"
    wheelhouse.mkdir()
    (wheelhouse / "README").write_text("prebaked: the stack was installed in the chroot pre-stage\n")
    return dataclasses.replace(
        plan, base_url=f"file://{prebaked}", base_checksum=f"sha256:{sha256(prebaked)}", wheelhouse=wheelhouse
    )


def write_seed(seed_dir: Path, user: str, pubkey: str) -> None:
    """The NoCloud seed creating the temporary build login (served by Packer's HTTP server)."""
    seed_dir.mkdir(parents=True)
    user_data = {
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
    }
    (seed_dir / "user-data").write_text("#cloud-config\n" + json.dumps(user_data, indent=1) + "\n")
    (seed_dir / "meta-data").write_text(
        json.dumps({"instance-id": f"lcs-build-{secrets.token_hex(4)}", "local-hostname": "localhost"}) + "\n"
    )


def hcl_map(d: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in sorted(d.items())) + "}"


def packer_vars(req: BuildRequest, plan: BuildPlan, work: Path) -> dict[str, object]:
    """The -var arguments of `packer build`."""
    pvars: dict[str, object] = {
        "image_name": plan.name,
        "accelerator": plan.accelerator,
        "output_directory": work / "out",
        "seed_directory": work / "seed",
        "ssh_private_key_file": work / "build_key",
        "serial_log": work / "build-console.log",
        "wheelhouse_directory": plan.wheelhouse,
        "requirements_lock": lock_path(req.os_name),
        "git_commit": plan.commit,
        "build_date": build_date(plan.date),  # as the manifest and publish-image write it
        "jupyter_versions": hcl_map({"python": plan.vars["guest_python_version"], **plan.versions_locked}),
        "base_image_url": plan.base_url,
        "base_image_checksum": plan.base_checksum,
    }
    if req.extra_ca:
        pvars["extra_ca_bundle"] = Path(req.extra_ca).resolve()
    if plan.openstack is not None:
        # ids, as the pre-flight resolved them: Packer builds from exactly what it checked
        pvars.update(openstack_cloud=req.cloud, openstack_source_image=plan.openstack.source_image,
                     openstack_flavor=plan.openstack.flavor)  # fmt: skip
        if plan.openstack.network:
            pvars["openstack_networks"] = json.dumps([plan.openstack.network])
    return pvars


def run_packer(c, req: BuildRequest, plan: BuildPlan, work: Path, timings: dict[str, float]) -> str:
    """`packer build` of this OS with this builder; its output. A failure is an Exit with the console's tail."""
    key = work / "build_key"
    c.run(f"ssh-keygen -q -t ed25519 -N '' -C lcs-build -f {q(key)}", hide=True)
    write_seed(work / "seed", "lcs-build", (work / "build_key.pub").read_text())
    args = " ".join(q(f"-var={k}={v}") for k, v in packer_vars(req, plan, work).items())
    env = {"CHECKPOINT_DISABLE": "1", "PACKER_CACHE_DIR": str(OUTPUT_DIR / "packer_cache")}
    print(f"build-image: {plan.name} with {plan.packer} ({req.builder}, {plan.accelerator})", flush=True)
    with packer_.template(c, plan.packer) as tpl, c.cd(str(tpl)):
        t0 = time.monotonic()
        r = c.run(
            f"{q(plan.packer)} build -timestamp-ui -only={req.builder}.image -var-file=vars/{req.os_name}.pkrvars.hcl"
            f" {args} .",
            echo=True,
            pty=use_pty(),
            warn=True,
            env=env,
        )
        timings["packer"] = time.monotonic() - t0
    if r.failed:
        tail = ""
        log = work / "build-console.log"
        if log.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise Exit(f"build-image: Packer failed (exit {r.exited}). Build VM console, last lines:\n{tail}")
    return r.stdout


def register_openstack_build(req: BuildRequest, plan: BuildPlan, output: str) -> str:
    """openstack builder: the image Packer registered in Glance, recorded as published there."""
    m = re.search(r"An image was created: ([0-9a-f-]{36})", output)
    image_id = m[1] if m else "unknown"
    entry = manifest_entry(
        name=plan.name, os_name=req.os_name, versions={"python": plan.vars["guest_python_version"],
        **plan.versions_locked}, date=plan.date, git_commit=plan.commit, builder="openstack", image=None, sizes={},
        sha256=None, min_disk_gb=MIN_DISK_GB, min_ram_mb=MIN_RAM_MB,
    )  # fmt: skip
    entry["published"][req.cloud] = published(image_id, plan.name)
    set_min_ram(req.cloud, image_id, MIN_RAM_MB)
    append_entry(entry)
    print(f"build-image: {plan.name} registered in {req.cloud} as {image_id} (booted tests run on local builds)")
    return plan.name


def collect_artifact(plan: BuildPlan, work: Path) -> Path:
    """qemu builder: the qcow2 and the build console's log, moved to images/output/."""
    produced = work / "out" / f"{plan.name}.qcow2"
    if not produced.exists():
        raise Exit(f"build-image: Packer reported success but wrote no {produced.name}")
    image = OUTPUT_DIR / f"{plan.name}.qcow2"
    shutil.move(str(produced), image)
    shutil.copy(work / "build-console.log", OUTPUT_DIR / f"{plan.name}.build-console.log")
    return image


def verify_artifact(c, image: Path) -> dict[str, int]:
    """A sound qcow2 of the expected virtual size; its sizes for the manifest."""
    if c.run(f"qemu-img check -q {q(image)}", hide=True, warn=True).failed:
        raise Exit(f"build-image: {image} fails qemu-img check")
    info = json.loads(c.run(f"qemu-img info --output=json {q(image)}", hide=True).stdout)
    measure = json.loads(c.run(f"qemu-img measure --output=json -O qcow2 {q(image)}", hide=True).stdout)
    sizes = {
        "size_bytes": int(measure["required"]),
        "virtual_size_bytes": int(info["virtual-size"]),
        "compressed_size_bytes": image.stat().st_size,
    }
    if sizes["virtual_size_bytes"] != VIRTUAL_SIZE_BYTES:
        raise Exit(f"build-image: {image} has a virtual size of {sizes['virtual_size_bytes']}, expected 8 GiB")
    return sizes


def test_artifact(c, image: Path, plan: BuildPlan, timings: dict[str, float]) -> dict:
    """The image tests (they boot it); what was read from the image (stack versions, packages, accounts)."""
    t0 = time.monotonic()
    facts = run_image_tests(c, image, plan.accelerator)
    timings["tests"] = time.monotonic() - t0
    return facts


def record_build(req: BuildRequest, plan: BuildPlan, image: Path, facts: dict, sizes: dict[str, int]) -> None:
    append_entry(
        manifest_entry(
            name=plan.name, os_name=req.os_name, versions=facts["versions"], date=plan.date,
            git_commit=plan.commit, builder="qemu", image=image, sizes=sizes, sha256=sha256(image),
            min_disk_gb=MIN_DISK_GB, min_ram_mb=MIN_RAM_MB, packages=facts["packages"],
            accounts=facts["accounts"], security_upgrades=facts["security_upgrades"],
        )
    )  # fmt: skip


def report(plan: BuildPlan, image: Path, sizes: dict[str, int], timings: dict[str, float], total: float) -> None:
    """Timings next to the image (images/output/NAME.build.json) and on the terminal."""
    (OUTPUT_DIR / f"{plan.name}.build.json").write_text(
        json.dumps(
            {
                "packer_seconds": round(timings["packer"]),
                "tests_seconds": round(timings["tests"]),
                "total_seconds": round(total),
                "accelerator": plan.accelerator,
                "packer": plan.packer,
            },
            indent=2,
        )
    )
    print(
        f"build-image: prebake {timings.get('prebake', 0):.0f} s, Packer {timings['packer']:.0f} s, "
        f"tests {timings['tests']:.0f} s, total {total:.0f} s; "
        f"{sizes['compressed_size_bytes'] / 2**20:.0f} MiB compressed, {sizes['size_bytes'] / 2**20:.0f} MiB data"
    )
    print(f"build-image: recorded in {MANIFEST_PATH.relative_to(ROOT)}")
    print(plan.name)
