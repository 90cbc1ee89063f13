"""Image benchmark: build figures, sizes, and boot-to-ready of a baked image vs install-at-first-boot.

    sudo .venv/bin/python -m benchmarks.images [--image images/output/NAME.qcow2] [--accelerator tcg]

In one run, one VM at a time (the CPU is shared): the built image booted with the spawner's slim
cloud-config, then the same base booted with install-at-first-boot user-data (the original project's way: a
venv and `pip install` of the same Jupyter stack in runcmd, then the same unit). The guest installs from the
host's wheelhouse served over QEMU user networking: no download time is counted, so the install-at-first-boot
figure is a lower bound (from PyPI it is slower still). Prints a Markdown table and writes a JSON record next
to this file (benchmarks/results/).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import secrets
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from libcloudspawner import userdata as ud
from testkit.localhost import free_port
from testkit.vm import (
    GUEST_HOST_ADDR,
    SINGLEUSER_PORT,
    VM,
    StubHub,
    http_ok,
    hub_env,
    make_seed,
    running_vm,
    ssh_banner,
)
from testkit.wait import wait_until

ROOT = Path(__file__).resolve().parents[1]

USER = "alice"
DEADLINE_S = 1800


def _install_at_first_boot_userdata(env: dict[str, str], wheel_url: str) -> str:
    """The original project's approach: the same user, env file and unit, but Jupyter installed by runcmd.

    The same locked stack as the baked image (`requirements-<os>.lock`, served next to the wheels), so the
    two boots differ only in when it is installed. The install is one `sh -e` script, so a failed install
    fails the spawn instead of enabling a unit whose binary is missing (runcmd carries on after a failed
    command)."""
    install = " && ".join(
        [
            "python3 -m venv /opt/jupyter",
            f"/opt/jupyter/bin/pip install --quiet --no-index --trusted-host {GUEST_HOST_ADDR} --find-links "
            + wheel_url
            + f" --no-deps --require-hashes -r {wheel_url}requirements.lock",
            "ln -sf /opt/jupyter/bin/jupyterhub-singleuser /usr/local/bin/jupyterhub-singleuser",
            "systemctl daemon-reload",
            "systemctl enable --now " + ud.UNIT_NAME,
        ]
    )
    doc = {
        "users": ["default", {"name": USER, "homedir": f"/home/{USER}", "shell": "/bin/bash", "lock_passwd": True}],
        "write_files": [
            {"path": ud.ENV_PATH, "owner": "root:root", "permissions": "0600", "content": ud.env_file(env)},
            {
                "path": ud.UNIT_PATH,
                "owner": "root:root",
                "permissions": "0644",
                "content": ud.unit_file(username=USER, homedir=f"/home/{USER}", cmd=["jupyterhub-singleuser"]),
            },
        ],
        "runcmd": [["sh", "-ec", install]],
    }
    return "#cloud-config\n" + json.dumps(doc, indent=1) + "\n"


def _current_wheelhouse(os_name: str) -> Path:
    """images/output/wheelhouse/<os>-<digest of the locks>, as `invoke build-image` names it."""
    from devtools.images.wheelhouse import wheelhouse_dir as _wheelhouse_dir

    path = _wheelhouse_dir(os_name)
    if not (path / ".complete").exists():
        raise SystemExit(f"no wheelhouse for the current locks ({path}): run `invoke build-image --os {os_name}`")
    return path


@contextlib.contextmanager
def _serve(directory: Path):
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def boot(label: str, image: Path, accelerator: str, make_userdata) -> dict:
    """Boot ``image`` with the user-data ``make_userdata(env)``; seconds to SSH and to a ready server."""
    from jupyterhub import __version__ as hub_version

    token = secrets.token_hex(16)
    hub = StubHub(version=hub_version, token=token, username=USER).start()
    ssh_port, su_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix=f"lcs-bench-{label}-") as tmp:
        work = Path(tmp)
        userdata = make_userdata(hub_env(USER, hub.port, token))
        seed = make_seed(work, userdata, "i-" + secrets.token_hex(6), "lcs-bench")
        vm = VM(
            image=image,
            workdir=work,
            seed=seed,
            accelerator=accelerator,
            forwards={ssh_port: 22, su_port: SINGLEUSER_PORT},
        )
        print(f"[{label}] booting {image.name}", flush=True)
        try:
            with running_vm(vm):
                wait_until(lambda: vm.alive() and ssh_banner(ssh_port), timeout_s=DEADLINE_S, interval_s=1, what="SSH")
                to_ssh = vm.elapsed()
                print(f"[{label}] SSH after {to_ssh:.0f} s", flush=True)
                url = f"http://127.0.0.1:{su_port}/user/{USER}/api"
                wait_until(lambda: vm.alive() and http_ok(url), timeout_s=DEADLINE_S, interval_s=1, what="ready")
                to_ready = vm.elapsed()
                print(f"[{label}] single-user server ready after {to_ready:.0f} s", flush=True)
        except TimeoutError as e:
            raise SystemExit(f"[{label}] {e}; console:\n{vm.console_tail()}") from None
        finally:
            hub.stop()
    return {"seconds_to_ssh": round(to_ssh, 1), "seconds_to_ready": round(to_ready, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", help="built qcow2 (default: newest in images/manifest.json)")
    p.add_argument("--base", default=str(ROOT / "images/output/base/debian-12.qcow2"), help="the base qcow2")
    p.add_argument("--accelerator", default="tcg", choices=["kvm", "tcg"])
    p.add_argument("--phases", default="slim,first-boot", help="boots to run: slim, first-boot, or both (default)")
    args = p.parse_args()

    manifest = json.loads((ROOT / "images/manifest.json").read_text())
    wanted = Path(args.image).resolve().relative_to(ROOT).as_posix() if args.image else None
    entry = next(e for e in reversed(manifest["images"]) if wanted in (None, e["path"]))
    image, base = ROOT / entry["path"], Path(args.base)
    build = {}
    build_record = image.with_suffix(".build.json")
    if build_record.exists():
        build = json.loads(build_record.read_text())
    base_record = base.with_suffix(".json")
    if base_record.exists():
        build["base_seconds"] = json.loads(base_record.read_text()).get("build_seconds")

    # the wheelhouse `invoke build-image` downloaded for the current locks, served with the lock itself
    lock = ROOT / f"images/packer/files/requirements-{entry['os']}.lock"
    wheelhouse = _current_wheelhouse(entry["os"])

    phases = set(args.phases.split(","))
    no_run = {"seconds_to_ssh": float("nan"), "seconds_to_ready": float("nan")}
    slim = (
        no_run
        if "slim" not in phases
        else boot(
            "slim",
            image,
            args.accelerator,
            lambda env: ud.render_userdata(username=USER, env=env, cmd=["jupyterhub-singleuser"]),
        )
    )
    first = no_run
    if "first-boot" in phases:
        with tempfile.TemporaryDirectory(prefix="lcs-bench-wheels-") as served, _serve(Path(served)) as port:
            for wheel in wheelhouse.glob("*.whl"):
                (Path(served) / wheel.name).symlink_to(wheel)
            (Path(served) / "requirements.lock").symlink_to(lock)
            url = f"http://{GUEST_HOST_ADDR}:{port}/"
            first = boot(
                "install-at-first-boot",
                base,
                args.accelerator,
                lambda env: _install_at_first_boot_userdata(env, url),
            )

    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "image": entry["name"],
        "accelerator": args.accelerator,
        "build": build,
        "size": {
            "data_bytes": entry["size_bytes"],
            "compressed_bytes": entry["compressed_size_bytes"],
            "virtual_bytes": entry["virtual_size_bytes"],
        },
        "slim": slim,
        "install_at_first_boot": first,
        "ratio_ready": round(first["seconds_to_ready"] / slim["seconds_to_ready"], 2),
        "ratio_ssh": round(first["seconds_to_ssh"] / slim["seconds_to_ssh"], 2),
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / f"images-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json").write_text(json.dumps(result, indent=2))
    mib = 2**20
    print("\n| | baked image, slim cloud-config | base + install at first boot | ratio |")
    print("|---|---|---|---|")
    print(
        f"| boot to SSH | {slim['seconds_to_ssh']:.0f} s | {first['seconds_to_ssh']:.0f} s | {result['ratio_ssh']}x |"
    )
    print(
        f"| boot to ready | {slim['seconds_to_ready']:.0f} s | {first['seconds_to_ready']:.0f} s | "
        f"{result['ratio_ready']}x |"
    )
    print(
        f"\nsize: {entry['size_bytes'] / mib:.0f} MiB data, {entry['compressed_size_bytes'] / mib:.0f} MiB compressed"
    )
    print(f"build: {json.dumps(build)}")


if __name__ == "__main__":
    main()
