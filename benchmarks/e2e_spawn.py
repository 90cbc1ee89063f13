"""Spawn-to-ready on the real dev cloud: what a user waits for, side by side.

Modes (each through a real JupyterHub + proxy + LibcloudSpawner, the time from the REST spawn request to
the hub marking the server ready, i.e. the single-user server answering on the VM):

- ``ours``: the pre-built Jupyter image (newest published to devcloud in images/manifest.json) + the
  spawner's slim cloud-init;
- ``install``: the bare base image (images/output/base/debian-12.qcow2, uploaded to Glance as
  ``lcs-bench-base`` if missing) + install-at-first-boot user-data (the original project's approach:
  venv + pip install of the locked stack, then the same unit). Guests have no route out, so the
  wheelhouse is served from the host (10.99.0.1) by a throw-away HTTP server;
- ``bare``: the floor, create to SSH banner with no user-data (openstacksdk, no hub): the base image, and
  the project's image itself (same disk: ours/bare is what the slim cloud-init and Jupyter's start add);
- ``concurrency``: ``ours`` with 1, 2 and 4 users at once;
- ``baseline``: ``ours`` with another Glance image (``--baseline NAME``, e.g. the previous build) and/or
  another cloud-init template (``--baseline-template FILE``, e.g. ``git show REV:cloudinit/singleuser.yaml.j2``),
  to compare two builds or two templates side by side in one run.

    python -m benchmarks.e2e_spawn --modes ours,bare,install,concurrency --concurrency 2,4

Prerequisites: `invoke devcloud up`, `invoke publish-image --cloud devcloud`. Every wait has a deadline.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import socket
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from testkit.e2e import connect_nova, devcloud_facts, hub_bind_port, published_image, servers_of
from testkit.hub import Hub

REPO = Path(__file__).resolve().parents[1]

warnings.simplefilter("ignore")

BASE_QCOW2 = REPO / "images" / "output" / "base" / "debian-12.qcow2"
LOCK = REPO / "images" / "packer" / "files" / "requirements-debian-12.lock"
BASE_GLANCE_NAME = "lcs-bench-base"

INSTALL_TEMPLATE = """#cloud-config
users:
  - default
  - name: {{ username | tojson }}
    homedir: {{ homedir | tojson }}
    shell: /bin/bash
    lock_passwd: true
write_files:
  - path: {{ env_path | tojson }}
    owner: "root:root"
    permissions: "0600"
    content: {{ env_file | tojson }}
  - path: {{ unit_path | tojson }}
    owner: "root:root"
    permissions: "0644"
    content: {{ unit_file | tojson }}
runcmd:
  - [python3, -m, venv, /opt/jupyter]
  - [/opt/jupyter/bin/pip, install, --no-index, --trusted-host, "@HOST@", --find-links, "@URL@",
     --no-deps, --require-hashes, -r, "@URL@requirements.lock"]
  - [sh, -c, "for c in jupyterhub-singleuser jupyter-lab jupyter python; do\
      ln -sf /opt/jupyter/bin/$c /usr/local/bin/$c; done"]
  - [systemctl, daemon-reload]
  - [systemctl, enable, --now, {{ unit_name | tojson }}]
"""


def serve_wheelhouse(host: str) -> tuple[str, http.server.ThreadingHTTPServer, Path]:
    """The locked wheelhouse and the lock file over HTTP on the host's flatnet address."""
    from devtools.images.wheelhouse import wheelhouse_dir as _wheelhouse_dir

    wheelhouse = _wheelhouse_dir("debian-12")
    if not (wheelhouse / ".complete").exists():
        raise SystemExit(f"no wheelhouse for the current locks ({wheelhouse}): run `invoke build-image --os debian-12`")
    root = Path(tempfile.mkdtemp(prefix="lcs-bench-wheels-"))
    for wheel in wheelhouse.glob("*.whl"):
        (root / wheel.name).symlink_to(wheel)
    (root / "requirements.lock").symlink_to(LOCK)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # one line per wheel would drown the benchmark's output
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://{host}:{server.server_address[1]}/", server, root


def base_image(conn) -> str:
    image = conn.image.find_image(BASE_GLANCE_NAME)
    if image is None:
        print(f"uploading {BASE_QCOW2} to Glance as {BASE_GLANCE_NAME}", flush=True)
        image = conn.image.create_image(
            name=BASE_GLANCE_NAME, filename=str(BASE_QCOW2), disk_format="qcow2", container_format="bare",
            visibility="private", min_disk=8, min_ram=512, wait=True, timeout=900,
        )  # fmt: skip
    return image.id


def make_hub(
    facts, workdir: Path, images: list[tuple[str, str]], template: Path | None = None, extra_config: str = "",
    profiles: list[dict] | None = None,
) -> Hub:  # fmt: skip
    """A hub on the dev cloud with hub id ``bench-<pid>``; ``extra_config`` lines and ``profiles`` appended."""
    host = facts["host_ip"]
    port = hub_bind_port(host)
    extra = f"""
c.JupyterHub.hub_bind_url = 'http://{host}:{port}'
c.JupyterHub.hub_connect_url = 'http://{host}:{port}'
c.LibcloudSpawner.port = 8000
c.LibcloudSpawner.hub_id = 'bench-{os.getpid()}'
c.LibcloudSpawner.startup_poll_interval_seconds = 2
c.LibcloudSpawner.api_timeout_seconds = 60
c.LibcloudSpawner.start_timeout = 1800
c.LibcloudSpawner.http_timeout = 120
c.JupyterHub.log_level = 'INFO'
"""
    if template is not None:
        extra += f"c.LibcloudSpawner.cloudinit_template = {str(template)!r}\n"
    extra += extra_config
    config = {
        "libcloudparams": {
            "arg_user_id": facts["user"], "arg_key": facts["password"],
            "ex_force_auth_version": facts["auth_version"], "ex_force_auth_url": facts["auth_url"],
            "ex_force_service_region": facts["region"], "ex_tenant_name": facts["project"],
            "ex_domain_name": "default",
        },
        "userserver_net": facts["network"],
        "cloud_region": facts["region"],
        "userserver_sizes": [("2 vCPU, 2 GiB", "j1.small")],
        "userserver_images": images,
    }  # fmt: skip
    if profiles:
        config["profiles"] = profiles
    workdir.mkdir(parents=True, exist_ok=True)
    hub = Hub(workdir, None, config, extra)
    hub.start(timeout_s=90)
    return hub


def spawn_many(hub: Hub, users: list[str], deadline_s: float) -> list[float]:
    """Spawn ``users`` at once; seconds from each request to ready. Servers are stopped afterwards."""

    def one(user: str) -> float:
        hub.create_user(user)
        t0 = time.monotonic()
        r = hub.api("POST", f"/users/{user}/server", json={})
        assert r.status_code in (201, 202), r.text
        hub.wait_ready(user, timeout_s=deadline_s)
        return time.monotonic() - t0

    try:
        with ThreadPoolExecutor(len(users)) as pool:
            return list(pool.map(one, users))
    finally:
        for user in users:
            hub.api("DELETE", f"/users/{user}/server")
        for user in users:
            hub.wait_gone(user, timeout_s=300)


def bare_boot(conn, facts, image_id: str, deadline_s: float = 600) -> float:
    """Create to SSH banner of the base image, no user-data."""
    flavor = conn.compute.find_flavor("j1.small")
    network = conn.network.find_network(facts["network"])
    t0 = time.monotonic()
    server = conn.compute.create_server(
        name="lcs-bench-bare", image_id=image_id, flavor_id=flavor.id, networks=[{"uuid": network.id}],
        config_drive=True, metadata={"jupyterhub-hub-id": f"bench-{os.getpid()}"},
    )  # fmt: skip
    try:
        server = conn.compute.wait_for_server(server, wait=deadline_s, interval=2)
        address = server.addresses[facts["network"]][0]["addr"]
        while time.monotonic() - t0 < deadline_s:
            try:
                with socket.create_connection((address, 22), timeout=5) as s:
                    s.settimeout(10)
                    if s.recv(64).startswith(b"SSH-"):
                        return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(1)
        raise TimeoutError(f"no SSH banner within {deadline_s}s")
    finally:
        conn.compute.delete_server(server, ignore_missing=True)
        conn.compute.wait_for_delete(server, wait=300)


def finish(results: dict, save: Callable[[], None]) -> None:
    """Stamp the run's end and write its results (every e2e benchmark, in its ``finally``)."""
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    save()


def report(results: dict, path: Path) -> int:
    """Print the results and where they were written; the exit status."""
    print(json.dumps(results, indent=2))
    print(f"written to {path}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--modes",
        default="ours,bare,install,concurrency",
        help="comma-separated, run in this order (results are saved after each)",
    )
    parser.add_argument("--concurrency", default="2,4", help="users at once for the concurrency mode")
    parser.add_argument("--baseline", default="", help="Glance image name for the baseline mode (default: ours)")
    parser.add_argument(
        "--baseline-template",
        default="",
        help="cloud-init template file for the baseline mode (default: the packaged one), e.g. a previous version's",
    )
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    modes = args.modes.split(",")
    unknown = set(modes) - {"ours", "bare", "install", "concurrency", "baseline"}
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    if "baseline" in modes and not (args.baseline or args.baseline_template):
        parser.error("the baseline mode needs --baseline IMAGE_NAME and/or --baseline-template FILE")
    if args.baseline_template and not Path(args.baseline_template).is_file():
        parser.error(f"--baseline-template {args.baseline_template}: no such file")
    facts = devcloud_facts()
    conn = connect_nova(facts)
    image = published_image(conn)
    results: dict = {
        "image": image["name"],
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "modes": modes,
        "cpus": os.cpu_count(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"e2e_spawn-{time.strftime('%Y%m%dT%H%M%S')}.json"
    work = Path(tempfile.mkdtemp(prefix="lcs-bench-"))

    def load() -> float:
        return round(os.getloadavg()[0], 1)

    def save() -> None:
        """Ratios from what is there so far; written after every mode (a long run keeps what it measured)."""
        if "ours_s" in results and "install_s" in results:
            results["install_over_ours"] = round(results["install_s"] / results["ours_s"], 2)
        if "ours_s" in results and "bare_ours_ssh_s" in results:
            results["ours_over_bare"] = round(results["ours_s"] / results["bare_ours_ssh_s"], 2)
        if "ours_s" in results and "bare_base_ssh_s" in results:
            results["ours_over_bare_base"] = round(results["ours_s"] / results["bare_base_ssh_s"], 2)
        if "ours_s" in results and "baseline_s" in results:
            results["ours_over_baseline"] = round(results["ours_s"] / results["baseline_s"], 2)
        if "baseline_s" in results and "bare_ours_ssh_s" in results:
            results["baseline_over_bare"] = round(results["baseline_s"] / results["bare_ours_ssh_s"], 2)
        for n in range(2, 9):
            if f"concurrent_{n}_s" in results:
                results[f"concurrent_{n}_median_s"] = round(statistics.median(results[f"concurrent_{n}_s"]), 1)
        path.write_text(json.dumps(results, indent=2) + "\n")

    ours_hub: Hub | None = None

    def hub_ours() -> Hub:
        nonlocal ours_hub
        if ours_hub is None:
            ours_hub = make_hub(facts, work / "ours", [(image["display_name"], image["image_name"])])
        return ours_hub

    def stop_ours() -> None:
        nonlocal ours_hub
        if ours_hub is not None:
            ours_hub.stop()
            ours_hub = None

    try:
        for mode in modes:
            if mode == "ours":
                results["ours_s"] = round(spawn_many(hub_ours(), ["u1"], 900)[0], 1)
                results["ours_load"] = load()
                print("ours", results["ours_s"], flush=True)
            elif mode == "concurrency":
                counts = [int(x) for x in args.concurrency.split(",")]
                if "ours_s" in results:  # one user alone is the `ours` figure
                    results["concurrent_1_s"] = [results["ours_s"]]
                elif 1 not in counts:
                    counts.insert(0, 1)
                for n in counts:
                    times = [round(t, 1) for t in spawn_many(hub_ours(), [f"c{n}u{i}" for i in range(n)], 1500)]
                    results[f"concurrent_{n}_s"] = times
                    results[f"concurrent_{n}_load"] = load()
                    print("concurrency", n, times, flush=True)
                    save()
            elif mode == "bare":
                # the floor twice: the base image, and the project's image itself booted with no user-data (same disk,
                # so ours/bare is exactly what the slim cloud-init and Jupyter's start add)
                base_id = base_image(conn)
                results["bare_base_ssh_s"] = round(bare_boot(conn, facts, base_id), 1)
                print("bare base", results["bare_base_ssh_s"], flush=True)
                results["bare_ours_ssh_s"] = round(bare_boot(conn, facts, image["image_id"]), 1)
                results["bare_load"] = load()
                print("bare ours", results["bare_ours_ssh_s"], flush=True)
            elif mode == "baseline":
                stop_ours()  # one hub at a time
                template = Path(args.baseline_template).resolve() if args.baseline_template else None
                baseline = args.baseline or image["image_name"]
                hub = make_hub(facts, work / "baseline", [("Baseline", baseline)], template)
                try:
                    results["baseline_image"] = baseline
                    results["baseline_template"] = str(template) if template else "packaged"
                    results["baseline_s"] = round(spawn_many(hub, ["b1"], 900)[0], 1)
                    results["baseline_load"] = load()
                    print("baseline", results["baseline_s"], flush=True)
                finally:
                    hub.stop()
            elif mode == "install":
                stop_ours()  # one hub at a time
                base_image(conn)
                url, server, _ = serve_wheelhouse(facts["host_ip"])
                template = work / "install.yaml.j2"
                template.write_text(INSTALL_TEMPLATE.replace("@URL@", url).replace("@HOST@", facts["host_ip"]))
                hub = make_hub(facts, work / "install", [("Debian 12 base", BASE_GLANCE_NAME)], template)
                try:
                    results["install_s"] = round(spawn_many(hub, ["inst1"], 1700)[0], 1)
                    results["install_load"] = load()
                    print("install", results["install_s"], flush=True)
                finally:
                    hub.stop()
                    server.shutdown()
            save()
    finally:
        stop_ours()
        leftovers = servers_of(conn, f"bench-{os.getpid()}")
        for s in leftovers:
            conn.compute.delete_server(s, ignore_missing=True)
        results["leftovers_deleted"] = [s.name for s in leftovers]
        finish(results, save)
    return report(results, path)


if __name__ == "__main__":
    raise SystemExit(main())
