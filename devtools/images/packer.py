"""Packer: which binaries, their version, the template directory each one reads, and `packer validate`
(with a loopback Keystone, since Packer 1.6.6's openstack source authenticates while validating)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from invoke import Exit

from .common import PACKER_DIR, need, os_vars, q


def packer_version(c, packer: str) -> tuple[int, int, int]:
    out = c.run(f"{q(packer)} version", hide=True, env={"CHECKPOINT_DISABLE": "1"}).stdout
    m = re.search(r"v?(\d+)\.(\d+)\.(\d+)", out)
    if not m:
        raise Exit(f"cannot read the version of {packer}: {out!r}")
    return int(m[1]), int(m[2]), int(m[3])


def packers() -> list[str]:
    """Packer binaries to use: `packer` on PATH, plus any listed in LCS_PACKER (':'-separated)."""
    found = [p for p in (os.environ.get("LCS_PACKER", "").split(":")) if p and shutil.which(p)]
    if shutil.which("packer"):
        found.insert(0, shutil.which("packer"))
    return list(dict.fromkeys(found))


@contextlib.contextmanager
def template(c, packer: str) -> Iterator[Path]:
    """The template directory for this Packer: a copy without plugins.pkr.hcl for Packer < 1.7 (which does
    not know `required_plugins`); with it, after `packer init`, for current Packer."""
    version = packer_version(c, packer)
    with tempfile.TemporaryDirectory(prefix="lcs-packer-") as tmp:
        dest = Path(tmp) / "packer"
        shutil.copytree(PACKER_DIR, dest, ignore=shutil.ignore_patterns("base"))
        if version < (1, 7, 0):
            (dest / "plugins.pkr.hcl").unlink()
        else:
            with c.cd(str(dest)):
                c.run(f"{q(packer)} init .", echo=True, pty=False)
        yield dest


class FakeKeystone:
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


def validate_templates(c, oses: list[str]) -> None:
    """`packer fmt -check` and `packer validate` of the template for each OS with every Packer installed,
    and shellcheck of every script; Exit naming the Packer versions that failed."""
    need("packer", "shellcheck")
    for o in oses:
        os_vars(o)
    scripts = sorted(str(p) for p in PACKER_DIR.rglob("*.sh"))
    c.run("shellcheck -s sh " + " ".join(q(s) for s in scripts), echo=True, pty=False)
    failures = []
    with tempfile.TemporaryDirectory(prefix="lcs-validate-") as tmp, FakeKeystone() as keystone:
        wheelhouse = Path(tmp) / "wheelhouse"
        wheelhouse.mkdir()
        for packer in packers():
            version = ".".join(map(str, packer_version(c, packer)))
            with template(c, packer) as tpl, c.cd(str(tpl)):
                r = c.run(f"{q(packer)} fmt -check -diff .", echo=True, warn=True, pty=False)
                ok = r.ok
                for o in oses:
                    r = c.run(f"{q(packer)} fmt -check -diff vars/{o}.pkrvars.hcl", echo=True, warn=True, pty=False)
                    ok &= r.ok
                    args = [
                        f"-var-file=vars/{o}.pkrvars.hcl",
                        f"-var=image_name={o}-jupyter-validate",
                        f"-var=wheelhouse_directory={wheelhouse}",
                        f"-var=requirements_lock=files/requirements-{o}.lock",
                        "-var=openstack_cloud=validate",
                    ]
                    r = c.run(
                        f"{q(packer)} validate {' '.join(q(a) for a in args)} .",
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
    print(f"validate: templates valid for {', '.join(oses)} with {len(packers())} Packer flavour(s); "
          "scripts shellcheck-clean")  # fmt: skip
