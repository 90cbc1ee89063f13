"""Run the OpenStack API double: ``python -m testkit.osdouble --port 0 --portfile FILE [--latency 1.0] [--no-run]``.

Prints ``OSDOUBLE_URL=http://HOST:PORT`` (the Keystone URL to give libcloud as ``ex_force_auth_url``) and
``OSDOUBLE_CONTROL_URL=...``; ``--portfile`` gets the same as JSON ``{"url", "control_url", "pid",
"state_dir"}``, written atomically once both ports listen. SIGTERM/SIGINT stop every instance process
(SIGTERM, then SIGKILL after ``--kill-timeout-s``) before exiting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from . import catalogue as catalogue_mod
from .app import serve
from .records import Config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m testkit.osdouble", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="address of the API and control ports (loopback only)")
    p.add_argument("--port", type=int, default=0, help="API port (0: a free one)")
    p.add_argument("--control-port", type=int, default=0, help="control-only port that stays up during API stops")
    p.add_argument("--portfile", type=Path, help="write {url, control_url, pid, state_dir} as JSON here")
    p.add_argument("--state-dir", type=Path, help="instance dirs, logs, pid list (default: a new temp dir)")
    p.add_argument("--catalogue", default="default", help="preset name (default, recorded) or a JSON file")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every API call")
    p.add_argument("--no-run", action="store_true", help="do not run ExecStart; answer HTTP 200 with a stand-in")
    p.add_argument("--no-run-names", default=None, help="regex: only servers whose name matches get the stand-in")
    p.add_argument("--scheduling-s", type=float, default=Config.scheduling_s)
    p.add_argument("--spawning-s", type=float, default=Config.spawning_s)
    p.add_argument("--delete-linger-s", type=float, default=Config.delete_linger_s)
    p.add_argument("--boot-delay-s", type=float, default=Config.boot_delay_s)
    p.add_argument("--token-ttl-s", type=float, default=Config.token_ttl_s)
    p.add_argument("--token-revoke-after-s", type=float, default=None)
    p.add_argument("--standin-port", type=int, default=Config.standin_port)
    p.add_argument("--kill-timeout-s", type=float, default=Config.kill_timeout_s)
    p.add_argument("--subnet", default=Config.subnet, help="instance addresses (127.0.0.1 is skipped)")
    for phase in ("creating", "attaching", "detaching", "deleting"):
        p.add_argument(
            f"--volume-{phase}-s",
            type=float,
            default=getattr(Config, f"volume_{phase}_s"),
            help=f"seconds a Cinder volume stays {phase}",
        )
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if not args.host.startswith("127."):
        p.error("the double only listens on loopback addresses")
    return args


def load_catalogue(spec: str) -> dict:
    if spec in catalogue_mod.PRESETS:
        return catalogue_mod.preset(spec)
    data = json.loads(Path(spec).read_text())
    cat = catalogue_mod.preset(data.pop("preset", "default"))
    for part, value in data.items():
        if part in ("identity", "quotas", "host"):
            cat[part].update(value)
        else:
            cat[part] = catalogue_mod.normalise(part, value)
    return cat


async def main_async(args: argparse.Namespace) -> None:
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="osdouble-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    config = Config(
        latency_s=args.latency,
        scheduling_s=args.scheduling_s,
        spawning_s=args.spawning_s,
        delete_linger_s=args.delete_linger_s,
        boot_delay_s=args.boot_delay_s,
        token_ttl_s=args.token_ttl_s,
        token_revoke_after_s=args.token_revoke_after_s,
        no_run=args.no_run,
        no_run_names=args.no_run_names,
        standin_port=args.standin_port,
        kill_timeout_s=args.kill_timeout_s,
        subnet=args.subnet,
        volume_creating_s=args.volume_creating_s,
        volume_attaching_s=args.volume_attaching_s,
        volume_detaching_s=args.volume_detaching_s,
        volume_deleting_s=args.volume_deleting_s,
    )
    double, port, ctl_port, ctl_server = await serve(
        config, state_dir, args.host, args.port, args.control_port, load_catalogue(args.catalogue)
    )
    url = f"http://{args.host}:{port}"
    control_url = f"http://{args.host}:{ctl_port}"
    info = {"url": url, "control_url": control_url, "pid": os.getpid(), "state_dir": str(state_dir)}
    if args.portfile:
        tmp = args.portfile.with_suffix(args.portfile.suffix + ".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(args.portfile)
    print(f"OSDOUBLE_URL={url}\nOSDOUBLE_CONTROL_URL={control_url}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger("osdouble").info("stopping: killing instance processes")
    await double.shutdown()
    if ctl_server is not None:
        ctl_server.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
