"""Boot one small server on the dev cloud through Apache Libcloud, as the spawner does, then delete it.

Run with the project's venv python (apache-libcloud): `invoke devcloud smoke`, or
`.venv/bin/python devcloud/smoke.py --image testvm`. The driver arguments are the original
documentation's `libcloudparams`. Prints one line per phase and a JSON summary of the timings;
exits non-zero (with the server deleted) when a phase fails or passes its deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import urllib.request

from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState, Provider


def driver(password: str):
    cls = get_driver(Provider.OPENSTACK)
    return cls(
        "jupyter",
        password,
        ex_force_auth_version="3.x_password",
        ex_force_auth_url="http://127.0.0.1:5000",
        ex_force_service_region="RegionOne",
        ex_tenant_name="jupyter",
        ex_domain_name="default",
    )


def probe_closed_port(ip: str, port: int) -> str:
    """A port the security group does not open: dropped if groups are enforced, refused if not."""
    try:
        with socket.create_connection((ip, port), timeout=3):
            return f"port {port} open?! (unexpected)"
    except ConnectionRefusedError:
        return f"NOT enforced (port {port} answered 'refused'; firewall_driver noop?)"
    except OSError:
        return f"enforced (port {port}, not in the group, is filtered)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="testvm", help="Glance image name (testvm serves HTTP on :8000)")
    ap.add_argument("--flavor", default="m1.tiny", help="flavor name")
    ap.add_argument("--network", default="flatnet", help="network name")
    ap.add_argument("--http-port", type=int, default=8000, help="port the guest answers on (0: do not check)")
    ap.add_argument("--deadline", type=float, default=300, help="seconds allowed for each wait")
    args = ap.parse_args()
    password = os.environ.get("DEVCLOUD_JUPYTER_PASSWORD", os.environ.get("DEVCLOUD_PASSWORD", "secret"))
    timings: dict[str, float] = {}
    t_all = time.monotonic()

    def phase(name: str, t0: float) -> None:
        timings[name] = round(time.monotonic() - t0, 2)
        print(f"{name:<32} {timings[name]:7.2f}s", flush=True)

    t0 = time.monotonic()
    drv = driver(password)
    image = next((i for i in drv.list_images() if i.name == args.image), None)
    phase("auth + list_images", t0)
    if image is None:
        print(f"no image {args.image!r} (build it: devcloud/devcloud.sh test-guest)", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    size = next(s for s in drv.list_sizes() if s.name == args.flavor)
    net = next(n for n in drv.ex_list_networks() if n.name == args.network)
    phase("list_sizes + ex_list_networks", t0)

    t0 = time.monotonic()
    node = drv.create_node(
        name="devcloud-smoke",
        image=image,
        size=size,
        networks=[net],
        ex_userdata="#cloud-config\n# devcloud smoke test\n",
        ex_metadata={"purpose": "devcloud-smoke"},
    )
    phase("create_node (API)", t0)
    ok = False
    try:
        while True:
            n = drv.ex_get_node_details(node.id)
            if n is not None and n.state == NodeState.RUNNING:
                break
            if n is not None and n.state == NodeState.ERROR:
                raise RuntimeError(f"server ERROR: {n.extra.get('fault')}")
            if time.monotonic() - t0 > args.deadline:
                raise RuntimeError(f"not ACTIVE after {args.deadline}s")
            time.sleep(1)
        phase("create -> ACTIVE", t0)
        print(f"  ips={n.private_ips} config_drive={n.extra.get('config_drive')}", flush=True)
        if args.http_port and n.private_ips:
            url = f"http://{n.private_ips[0]}:{args.http_port}/"
            body = None
            while body is None:
                try:
                    with urllib.request.urlopen(url, timeout=3) as r:
                        body = r.read().decode(errors="replace")
                except OSError:
                    if time.monotonic() - t0 > args.deadline:
                        raise RuntimeError(f"{url} did not answer within {args.deadline}s") from None
                    time.sleep(2)
            phase("create -> guest answers HTTP", t0)
            print("  " + body.strip().splitlines()[0], flush=True)
            if "devcloud smoke test" not in body:
                raise RuntimeError("the guest did not see the user-data on its config drive")
            print("  user-data seen by the guest on its config drive", flush=True)
            print(f"  security group: {probe_closed_port(n.private_ips[0], args.http_port + 1)}", flush=True)
        ok = True
    except RuntimeError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
    finally:
        t0 = time.monotonic()
        drv.destroy_node(node)
        while drv.ex_get_node_details(node.id) is not None:
            if time.monotonic() - t0 > args.deadline:
                print(f"FAILED: server {node.id} still there after {args.deadline}s", file=sys.stderr)
                ok = False
                break
            time.sleep(1)
        phase("destroy -> gone", t0)
    phase("total", t_all)
    print(json.dumps(timings))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
