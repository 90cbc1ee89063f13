"""Test tiers and lint: `invoke test` runs every tier in order, as CI does."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from invoke import Exit, task

ROOT = Path(__file__).resolve().parent.parent

# Tier name -> what it proves. Order matters: cheap and broad first, the real cloud last.
TIERS = {
    "lint": "ruff check and ruff format --check on all Python, shellcheck on all shell scripts",
    "unit": "pure modules, the OpenStack API double, rendering property tests with the real cloud-init validator",
    "hub": "a real JupyterHub + proxy + LibcloudSpawner + libcloud's OpenStack driver against the API double",
    "images": "Packer templates validated; the Debian 12 base and image built, then testinfra offline and booted",
    "e2e": "the dev cloud up, the image published, a real JupyterHub spawning VMs in a real OpenStack",
}
# What `invoke test` (and so CI) runs when no tier is named.
DEFAULT_TIERS = ["lint", "unit", "hub", "images", "e2e"]


def _pytest(c, paths: list[str], extra: str = "") -> None:
    """Run pytest; 'no tests collected' (exit 5) is a failure here, never a silent pass."""
    args = " ".join(shlex.quote(p) for p in paths)
    r = c.run(f"python -m pytest {args} {extra}", echo=True, warn=True, pty=False)
    if r.exited == 5:
        raise Exit(f"pytest collected no tests in {args}: a tier that tests nothing is a failure", code=1)
    if r.exited != 0:
        raise Exit(f"tests failed in {args}", code=r.exited)


def _shell_scripts(c) -> list[str]:
    """Shell scripts git knows of (tracked, or new and not ignored)."""
    files = c.run("git ls-files -co --exclude-standard", hide=True).stdout.split()
    return sorted(f for f in files if f.endswith(".sh") or Path(f).name in {"bootstrap", "run"})


@task(help={"fix": "let ruff fix what it can and format the code"})
def lint(c, fix=False):
    """Lint: ruff check and ruff format --check on all Python, shellcheck on every shell script."""
    with c.cd(str(ROOT)):
        c.run("ruff check ." + (" --fix" if fix else ""), echo=True, pty=False)
        c.run("ruff format" + ("" if fix else " --check") + " .", echo=True, pty=False)
        if not shutil.which("shellcheck"):
            raise Exit("shellcheck is missing: install it with `apt-get install shellcheck` (./bootstrap does)")
        scripts = _shell_scripts(c)
        c.run("shellcheck " + " ".join(shlex.quote(s) for s in scripts), echo=True, pty=False)


@task(
    help={
        "tier": "run only this tier (" + ", ".join(TIERS) + "); default: " + ", ".join(DEFAULT_TIERS),
        "pytest_args": "extra arguments for pytest, e.g. '-x -k form'",
    }
)
def test(c, tier="all", pytest_args=""):
    """Run the test tiers (lint, unit, hub, ...): what CI runs."""
    tiers = DEFAULT_TIERS if tier == "all" else [tier]
    for t in tiers:
        if t not in TIERS:
            raise Exit(f"unknown tier {t!r}: choose one of {', '.join(TIERS)}")
    with c.cd(str(ROOT)):
        for t in tiers:
            print(f"=== tier {t}: {TIERS[t]}", flush=True)
            if t == "lint":
                lint(c)
            elif t == "images":
                _images_tier(c)
            elif t == "e2e":
                _e2e_tier(c, pytest_args)
            else:
                _pytest(c, [f"tests/{t}"], pytest_args)


def _images_tier(c) -> None:
    """validate, build-base, build-image (which runs the offline and booted image tests itself)."""
    c.run("invoke validate", echo=True, pty=False)
    c.run("invoke build-base --os debian-12", echo=True, pty=False)
    # --base local: the base from Debian packages; no request to cloud.debian.org (CI may reach only the mirrors)
    c.run("invoke build-image --os debian-12 --base local", echo=True, pty=False)


def _e2e_tier(c, pytest_args: str) -> None:
    c.run("invoke devcloud up", echo=True, pty=False)
    c.run("invoke publish-image --cloud devcloud", echo=True, pty=False)
    _pytest(c, ["tests/e2e"], pytest_args)


TASKS = [lint, test]
