"""Instructions of a whole ``jupyterhub-singleuser`` start, the stack as published against as the image ships it.

    .venv/bin/python -m benchmarks.start_instructions [--venv /var/tmp/lcs-start-venv] [--runs 1]

Timings of a two-second native start vary by +-20% on a small machine, and an emulated start on the dev cloud
by more (docs/e2e.md), so a change to what a start runs is measured in instructions: ``valgrind
--tool=callgrind`` counts every instruction of the process, deterministically (two runs agree within 0.2%).

One run, side by side, the same venv (Debian 12's Python, the image's hashed lock, jupyter_lsp's server
extension disabled as in the image), only the ``jupyterhub`` and ``aiohttp`` packages and one configuration
file differing:

- ``published``: JupyterHub and aiohttp as on PyPI, JupyterLab's default (PyPI) extension manager;
- ``hub-edits``: with the JupyterHub patches of ``images/packer/patches/`` only (aiohttp as published,
  JupyterLab's default extension manager);
- ``image``: every patch of that set (aiohttp's TLS contexts too) and the image's read-only extension manager
  (the ``LabApp`` configuration that ``30-jupyter.sh`` writes), as the image ships it.

Each variant is measured twice: ``import jupyterhub.singleuser`` alone, and a whole start (the image's
``jupyterhub-singleuser`` arguments, a stand-in hub answering its API on loopback) until the server answers
``GET /user/NAME/api``, then its shutdown. Prints a Markdown table and writes a JSON record to
``benchmarks/results/``. Needs ``valgrind`` and ``python3-venv`` (Debian packages). Runs as any user; the
server gets ``--allow-root`` so that it also runs as root.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from testkit.imagefiles import IMAGE_FILES as FILES
from testkit.imagefiles import load_image_file
from testkit.localhost import free_port
from testkit.vm import StubHub, hub_env

ROOT = Path(__file__).resolve().parents[1]
lcs_patches = load_image_file("lcs_patches")

USER = "alice"
COLLECTED = re.compile(r"Collected : (\d+)")


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        sys.exit(f"start_instructions: {', '.join(missing)} not found (apt-get install valgrind python3-venv)")


def make_venv(venv: Path) -> Path:
    """Debian's Python 3 venv with the image's lock (cached by the lock's content)."""
    lock = FILES / "requirements-debian-12.lock"
    stamp = venv / ".lock"
    if stamp.exists() and stamp.read_text() == lock.read_text():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--require-hashes", "--no-deps", "-r", str(lock)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "compileall", "-q", str(venv / "lib")], check=False)
    subprocess.run(
        [str(venv / "bin" / "jupyter"), "server", "extension", "disable", "--sys-prefix", "jupyter_lsp"],
        check=True,
        capture_output=True,
    )
    stamp.write_text(lock.read_text())
    return venv


PACKAGES = ("jupyterhub", "aiohttp")
JUPYTER_SCRIPT = ROOT / "images" / "packer" / "scripts" / "common" / "30-jupyter.sh"
PATCHES = ROOT / "images" / "packer" / "patches"


def image_lab_config() -> dict:
    """The LabApp configuration the image's build writes (30-jupyter.sh), read from that script."""
    found = re.search(r"""printf '(\{"LabApp": .*\})\\n'""", JUPYTER_SCRIPT.read_text())
    if not found:
        raise SystemExit(f"start_instructions: no LabApp configuration found in {JUPYTER_SCRIPT}")
    return json.loads(found.group(1))


def make_variants(venv: Path, work: Path) -> dict[str, Path]:
    """One directory per variant holding ``jupyterhub`` and ``aiohttp`` (put first on the path) and, in
    ``config/``, its Jupyter configuration directory."""
    site = next((venv / "lib").glob("python3*/site-packages"))
    patches = {dist: lcs_patches.load_patches(d) for dist, _version, d, _info in lcs_patches.plan(PATCHES, site)}
    variants = {}
    for name, applied, config in (
        ("published", [], {}),
        ("hub-edits", patches["jupyterhub"], {}),
        ("image", [p for dist in PACKAGES for p in patches[dist]], image_lab_config()),
    ):
        dest = work / name
        for package in PACKAGES:
            shutil.copytree(site / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "tests"))
        texts, states = lcs_patches.dry_run(dest, applied)
        assert all(state == "applied" for _, state in states), states
        for path, text in texts.items():
            (dest / path).write_text(text, encoding="utf-8")
        (dest / "config").mkdir()
        (dest / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
        subprocess.run([str(venv / "bin" / "python"), "-m", "compileall", "-q", str(dest)], check=True)
        variants[name] = dest
    return variants


def callgrind(cmd: list[str], env: dict[str, str], until_url: str | None = None) -> int:
    """Instructions of ``cmd`` (and nothing it spawns); with ``until_url``, SIGTERM once that URL answers."""
    out = tempfile.NamedTemporaryFile(prefix="lcs-cg-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=out,
        cwd=env.get("HOME", "/"),
    )
    try:
        if until_url:
            deadline = time.monotonic() + 600
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited ({proc.returncode}): {Path(out.name).read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(until_url, timeout=5) as r:  # noqa: S310 (http://127.0.0.1 only)
                        if r.status < 500:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not answer within 600 s")
                time.sleep(0.5)
            # a moment for the request's log line: a signal during that write can make the stop fail
            time.sleep(1)
            for _ in range(3):
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                    break
                except subprocess.TimeoutExpired:
                    continue
        proc.wait(timeout=600)
        text = Path(out.name).read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.unlink(out.name)
    found = COLLECTED.findall(text)
    if not found:
        raise RuntimeError(f"callgrind reported no count: {text[-2000:]}")
    return int(found[-1])


def measure(venv: Path, variant: Path, home: Path) -> dict[str, int]:
    python = str(venv / "bin" / "python")
    base_env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    base_env["PYTHONPATH"] = str(variant)
    base_env["JUPYTER_CONFIG_DIR"] = str(variant / "config")
    imports = callgrind([python, "-c", "import jupyterhub.singleuser"], base_env)
    token = secrets.token_hex(16)
    hub = StubHub(version=_hub_version(venv), token=token, username=USER).start()
    try:
        port = free_port()
        env = {**base_env, **hub_env(USER, hub.port, token)}
        api = f"http://127.0.0.1:{hub.port}/hub/api"
        env.update(JUPYTERHUB_API_URL=api, JUPYTERHUB_ACTIVITY_URL=f"{api}/users/{USER}/activity")
        env["JUPYTERHUB_SERVICE_URL"] = f"http://127.0.0.1:{port}/user/{USER}/"
        cmd = [python, "-m", "jupyterhub.singleuser", "--ip=127.0.0.1", f"--port={port}", "--allow-root"]
        start = callgrind(cmd, env, until_url=f"http://127.0.0.1:{port}/user/{USER}/api")
    finally:
        hub.stop()
    return {"import": imports, "start": start}


def _hub_version(venv: Path) -> str:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('jupyterhub'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", default="/var/tmp/lcs-start-venv", help="venv with the image's lock (cached)")
    parser.add_argument("--runs", type=int, default=1, help="measurements per variant (deterministic: 1 is enough)")
    args = parser.parse_args()
    _need("valgrind", "/usr/bin/python3")
    venv = make_venv(Path(args.venv))
    with tempfile.TemporaryDirectory(prefix="lcs-start-") as tmp:
        work = Path(tmp)
        variants = make_variants(venv, work)
        home = work / "home"
        home.mkdir()
        results: dict[str, list[dict[str, int]]] = {name: [] for name in variants}
        for _ in range(args.runs):
            for name, path in variants.items():
                results[name].append(measure(venv, path, home))
                print(f"{name}: {results[name][-1]}", flush=True)
    best = {name: {k: min(r[k] for r in runs) for k in ("import", "start")} for name, runs in results.items()}
    ref = best["published"]
    print("\n| variant | import jupyterhub.singleuser | vs published | whole start | vs published |")
    print("|---|---|---|---|---|")
    for name, b in best.items():
        print(
            f"| {name} | {b['import'] / 1e9:.3f} G | {b['import'] / ref['import'] - 1:+.1%} "
            f"| {b['start'] / 1e9:.3f} G | {b['start'] / ref['start'] - 1:+.1%} |"
        )
    record = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "jupyterhub": _hub_version(venv),
        "python": subprocess.run(
            [str(venv / "bin" / "python"), "-V"], capture_output=True, text=True, check=True
        ).stdout.strip(),
        "runs": results,
    }
    out = ROOT / "benchmarks" / "results" / f"start_instructions-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"\n{out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
