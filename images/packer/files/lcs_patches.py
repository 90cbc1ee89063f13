"""Build step: apply the image's patch set to the installed dependencies, the way distributions carry patches.

Usage (by ``scripts/common/30-jupyter.sh``, as root, in the image's venv)::

    /opt/jupyter/bin/python -I lcs_patches.py [--pip-check] PATCHES_DIR SITE_PACKAGES_DIR

``PATCHES_DIR`` (``images/packer/patches/`` in the repository) holds one directory per patched distribution
and version, ``<dist>-<version>/NNNN-topic.patch``: unified diffs against the files of that release's wheel,
relative to site-packages (``patch -p1``), each with a header saying what it changes, why, and whether it has
been proposed upstream (``UPSTREAM.md`` beside them holds the proposals). The step:

1. finds the installed version of every distribution that has patch directories (``importlib.metadata``) and
   refuses, before touching anything, a version it has no directory for, naming the way out;
2. applies every patch in memory first (exact context; a hunk may sit at another line if its context occurs
   exactly once), so that a patch that does not apply leaves every file as it was; a patch whose result is
   already there (the reverse applies) counts as applied, so the step is idempotent (the chroot pre-stage and
   the guest both run it) and re-applies what ``pip install --force-reinstall`` undid;
3. writes the edited files, byte-compiles them, and makes each distribution's ``RECORD`` match again (sha256
   and size of the edited files, and of the ``LCS_PATCHES`` file it writes into the dist-info, which lists the
   patches applied with their sha256), then verifies every hashed ``RECORD`` entry of those distributions;
4. checks the effect in a fresh interpreter (a server's ``import jupyterhub.singleuser`` loads no SQLAlchemy,
   Alembic, Mako, ``jupyterhub.orm`` or ``jupyterhub.handlers``; importing ``aiohttp.connector`` makes no SSL
   context) and, with ``--pip-check``, runs ``pip check``; any failure stops the build.

It prints one ``jupyter patches: {json}`` line (the patch set's digest and the patches applied) that a build
manifest can carry. Standard library only: it runs in the image's venv, where GNU patch may be missing.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata
import io
import json
import os
import py_compile
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

#: where the patch directories live in the repository (named in messages: the build sees only a copy)
IN_REPO = "images/packer/patches"
#: the file, in a patched distribution's dist-info, that lists what was applied
APPLIED_FILE = "LCS_PATCHES"
HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class PatchError(Exception):
    """A patch set that cannot be applied (the message says which and how to go on)."""


@dataclass
class Hunk:
    old_start: int
    new_start: int
    old: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)


@dataclass
class FilePatch:
    path: str
    hunks: list[Hunk] = field(default_factory=list)


@dataclass
class Patch:
    name: str  # <dist>-<version>/NNNN-topic.patch
    data: bytes
    files: list[FilePatch] = field(default_factory=list)


def _strip(path: str) -> str:
    """``a/jupyterhub/orm.py`` -> ``jupyterhub/orm.py`` (``-p1``), without a trailing timestamp."""
    path = path.split("\t")[0].strip()
    return path.split("/", 1)[1] if "/" in path else path


def parse_patch(name: str, data: bytes) -> Patch:
    """A unified diff; text before the first ``--- `` line is its header."""
    patch = Patch(name, data)
    lines = data.decode("utf-8").splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            patch.files.append(FilePatch(_strip(lines[i + 1][4:])))
            i += 2
            continue
        found = HUNK_HEADER.match(line)
        if not found:
            i += 1
            continue
        if not patch.files:
            raise PatchError(f"{name}: a hunk before any file header")
        old_left = int(found.group(2) or "1")
        new_left = int(found.group(4) or "1")
        hunk = Hunk(int(found.group(1)), int(found.group(3)))
        i += 1
        tag = ""
        while i < len(lines) and (old_left or new_left or lines[i].startswith("\\")):
            line = lines[i]
            i += 1
            if line.startswith("\\"):  # "\ No newline at end of file": the line before has none
                if tag in (" ", "-"):
                    hunk.old[-1] = hunk.old[-1].removesuffix("\n")
                if tag in (" ", "+"):
                    hunk.new[-1] = hunk.new[-1].removesuffix("\n")
                continue
            tag, body = line[:1], line[1:] or "\n"
            if tag in (" ", "\n"):
                tag = " "
                hunk.old.append(body)
                hunk.new.append(body)
                old_left, new_left = old_left - 1, new_left - 1
            elif tag == "-":
                hunk.old.append(body)
                old_left -= 1
            elif tag == "+":
                hunk.new.append(body)
                new_left -= 1
            else:
                raise PatchError(f"{name}: unexpected line in a hunk: {line!r}")
        if old_left or new_left:
            raise PatchError(f"{name}: a hunk of {patch.files[-1].path} ends early")
        patch.files[-1].hunks.append(hunk)
    if not patch.files:
        raise PatchError(f"{name}: no file in it")
    return patch


def apply_hunks(text: str, hunks: list[Hunk], *, reverse: bool = False) -> str:
    """``text`` with every hunk applied (``reverse``: undone); raises PatchError naming the first that does not
    fit. A hunk's old lines must match exactly, at its line (shifted as earlier hunks shifted the file) or, if
    not there, at the one place they occur."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    pos = 0  # lines of ``text`` consumed
    drift = 0  # how far the previous hunk sat from its stated line
    for number, hunk in enumerate(hunks, 1):
        old, new = (hunk.new, hunk.old) if reverse else (hunk.old, hunk.new)
        start = hunk.new_start if reverse else hunk.old_start
        base = start - 1 if old else start  # an insertion's start is the line it follows
        want = base + drift
        at = want if want >= pos and lines[want : want + len(old)] == old else None
        if at is None:
            places = [k for k in range(pos, len(lines) - len(old) + 1) if lines[k : k + len(old)] == old]
            if len(places) != 1 or not old:
                where = "nowhere" if not places else f"{len(places)} times"
                raise PatchError(f"hunk {number} (line {start}, from {(old or new)[0]!r}): its lines occur {where}")
            at = places[0]
        out += lines[pos:at] + new
        pos = at + len(old)
        drift = at - base
    return "".join(out + lines[pos:])


# --- the patch set and the installed distributions -------------------------------------------------------


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def patch_directories(patches_dir: Path) -> dict[str, dict[str, Path]]:
    """normalised distribution name -> version -> its directory of patches."""
    found: dict[str, dict[str, Path]] = {}
    for d in sorted(p for p in patches_dir.iterdir() if p.is_dir()):
        dist, sep, version = d.name.rpartition("-")
        if not sep or not dist or not version[:1].isdigit():
            raise PatchError(f"{d}: a patch directory is named <distribution>-<version>")
        found.setdefault(_norm(dist), {})[version] = d
    return found


def load_patches(directory: Path) -> list[Patch]:
    return [parse_patch(f"{directory.name}/{p.name}", p.read_bytes()) for p in sorted(directory.glob("*.patch"))]


def installed(site: Path) -> dict[str, tuple[str, Path]]:
    """normalised distribution name -> (version, dist-info directory), for the distributions in ``site``."""
    found: dict[str, tuple[str, Path]] = {}
    for info in sorted(site.glob("*.dist-info")):
        meta = importlib.metadata.Distribution.at(info).metadata
        if meta is None or not meta["Name"]:
            continue
        name = _norm(meta["Name"])
        if name in found:
            twice = f"{found[name][1].name}, {info.name}"
            raise PatchError(f"{site}: two dist-info directories for {meta['Name']}: {twice}")
        found[name] = (meta["Version"], info)
    return found


def plan(patches_dir: Path, site: Path) -> list[tuple[str, str, Path, Path]]:
    """(distribution, version, its patch directory, its dist-info) for every patched distribution; refuses
    (every problem at once) a distribution missing from ``site`` or a version without a patch directory."""
    dirs, have = patch_directories(patches_dir), installed(site)
    steps, problems = [], []
    for dist, versions in dirs.items():
        known = ", ".join(f"{dist}-{v}" for v in versions)
        if dist not in have:
            problems.append(f"{IN_REPO}/ has patches for {dist} ({known}), which is not installed in {site}")
            continue
        version, info = have[dist]
        if version not in versions:
            problems.append(
                f"no patch for {dist} {version} in {IN_REPO}/: add patches/{dist}-{version}/ or drop the edit "
                f"(there: {known})"
            )
            continue
        steps.append((dist, version, versions[version], info))
    if problems:
        raise PatchError("\n".join(problems))
    return steps


def dry_run(site: Path, patches: list[Patch]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(path -> new text of each file some patch changes, [(patch, "applied" | "already applied")]), computed
    in memory: a patch applies whole (every file) or, if its reverse applies whole, is already there."""
    texts: dict[str, str] = {}
    original: dict[str, str] = {}
    states = []
    for patch in patches:
        for fp in patch.files:
            if fp.path not in texts:
                try:
                    texts[fp.path] = original[fp.path] = (site / fp.path).read_bytes().decode("utf-8")
                except OSError as e:
                    raise PatchError(f"{patch.name}: {fp.path}: {e.strerror}") from None
        errors = {}
        for reverse in (False, True):
            try:
                result = {fp.path: texts[fp.path] for fp in patch.files}
                for fp in patch.files:
                    result[fp.path] = apply_hunks(result[fp.path], fp.hunks, reverse=reverse)
            except PatchError as e:
                errors[reverse] = f"{fp.path}: {e}"
                continue
            if not reverse:
                texts.update(result)
            states.append((patch.name, "already applied" if reverse else "applied"))
            break
        else:
            raise PatchError(
                f"{patch.name} does not apply to {site} (forward: {errors[False]}; nor is it already there: "
                f"{errors[True]}); refresh the patch against the installed release or drop it"
            )
    return {path: text for path, text in texts.items() if text != original[path]}, states


# --- RECORD -----------------------------------------------------------------------------------------------


def record_hash(data: bytes) -> str:
    """A RECORD hash: ``sha256=`` and the urlsafe base64 of the digest without padding (PEP 376 / 627)."""
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")


def _read_record(info: Path) -> list[list[str]]:
    return [row for row in csv.reader(io.StringIO((info / "RECORD").read_text(encoding="utf-8"))) if row]


def _record_line_end(info: Path) -> str:
    """The line ending the installer wrote RECORD with (pip's csv writes CRLF, others LF), kept on rewrite."""
    return "\r\n" if b"\r\n" in (info / "RECORD").read_bytes() else "\n"


def update_record(site: Path, info: Path, paths: list[str]) -> None:
    """Rewrite the RECORD rows of ``paths`` (relative to ``site``) with their files' hash and size, adding a
    row for a path it does not list."""
    rows = _read_record(info)
    index = {row[0]: row for row in rows}
    for path in paths:
        data = (site / path).read_bytes()
        if path not in index:
            index[path] = [path, "", ""]
            rows.insert(len(rows) - 1 if rows and rows[-1][0].endswith("/RECORD") else len(rows), index[path])
        index[path][1:] = [record_hash(data), str(len(data))]
    out = io.StringIO()
    csv.writer(out, lineterminator=_record_line_end(info)).writerows(rows)
    _write(info / "RECORD", out.getvalue().encode("utf-8"))


def record_mismatches(site: Path, info: Path) -> list[str]:
    """The hashed RECORD entries in ``site`` of a distribution that its files no longer match (not its scripts
    and data outside site-packages, which no patch edits)."""
    bad = []
    for row in _read_record(info):
        if len(row) < 3 or not row[1] or row[0].startswith(("../", "/")):
            continue
        path = site / row[0]
        try:
            data = path.read_bytes()
        except OSError:
            bad.append(f"{row[0]} (missing)")
            continue
        if record_hash(data) != row[1] or (row[2] and int(row[2]) != len(data)):
            bad.append(row[0])
    return bad


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically, keeping its mode (and breaking a hard link rather than writing through)."""
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- the effect, checked in a fresh interpreter -----------------------------------------------------------

HUB_CHECK = """import json, sys
import jupyterhub.singleuser
heavy = ("sqlalchemy", "alembic", "mako", "jupyterhub.orm", "jupyterhub.handlers")
print(json.dumps(sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))))
"""

AIOHTTP_CHECK = """import json, ssl
made = []
_new = ssl.SSLContext.__new__
ssl.SSLContext.__new__ = staticmethod(lambda cls, *a, **k: made.append(cls.__name__) or _new(cls, *a, **k))
import aiohttp.connector
print(json.dumps(made))
"""

#: distribution -> (what must hold, code printing a JSON list that must be empty)
CHECKS = {
    "jupyterhub": ("import jupyterhub.singleuser loads no SQLAlchemy, Alembic, Mako or hub ORM/handlers", HUB_CHECK),
    "aiohttp": ("importing aiohttp.connector makes no SSL context", AIOHTTP_CHECK),
}


def import_check(site: Path, dist: str, checks: dict[str, tuple[str, str]]) -> str | None:
    """None if the effect holds for ``dist`` (a fresh interpreter, ``site`` first on its path), else why not."""
    if dist not in checks:
        return None
    what, code = checks[dist]
    # -E -s, not -I: "-c" then puts the working directory (site) first on the path
    out = subprocess.run(
        [sys.executable, "-E", "-s", "-c", code], cwd=site, capture_output=True, text=True, timeout=300
    )
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        return f"{what}: the check failed to run: {out.stderr.strip()[-2000:]}"
    found = json.loads(lines[-1])
    if not found:
        return None
    return f"{what}: it does not hold ({len(found)}: {', '.join(found[:8])}{', ...' if found[8:] else ''})"


# --- the step ---------------------------------------------------------------------------------------------


def apply_set(patches_dir: Path, site: Path, checks: dict[str, tuple[str, str]] = CHECKS) -> dict:
    """Apply the patch set to ``site`` (all or nothing), then run ``checks`` (distribution -> (what must hold,
    code printing a JSON list that must be empty)); returns what a manifest can carry."""
    steps = [(dist, load_patches(d), info) for dist, _version, d, info in plan(patches_dir, site)]
    # every distribution dry-run before any file is written
    changes = [(patches, info, *dry_run(site, patches)) for _dist, patches, info in steps]
    digest = hashlib.sha256()
    applied = []
    for patches, info, texts, states in changes:
        for path, text in texts.items():
            _write(site / path, text.encode("utf-8"))
        edited = sorted({fp.path for p in patches for fp in p.files})
        try:
            compiled = [os.path.relpath(py_compile.compile(str(site / p), doraise=True), site) for p in edited]
        except py_compile.PyCompileError as e:
            raise PatchError(f"a patched file does not compile: {e.msg.strip()}") from None
        listing = "".join(f"{p.name} sha256:{hashlib.sha256(p.data).hexdigest()}\n" for p in patches)
        _write(info / APPLIED_FILE, listing.encode("utf-8"))
        hashed = {row[0] for row in _read_record(info) if len(row) > 1 and row[1]}
        # a .pyc is rehashed only if the installer hashed it (pip lists them unhashed)
        ours = [*edited, *(c for c in compiled if c in hashed), f"{info.name}/{APPLIED_FILE}"]
        update_record(site, info, ours)
        bad = record_mismatches(site, info)
        if bad:
            raise PatchError(f"{info.name}/RECORD still differs from the files after patching: {bad}")
        for name, state in states:
            print(f"jupyter patches: {name}: {state}")
        for p in patches:
            digest.update(p.name.encode() + b"\0" + p.data)
            applied.append(p.name)
    failures = [why for dist, _patches, _info in steps if (why := import_check(site, dist, checks))]
    if failures:
        raise PatchError("after patching, " + "; ".join(failures))
    return {"sha256": digest.hexdigest(), "applied": applied}


def main(argv: list[str]) -> int:
    args = argv[1:]
    pip_check = "--pip-check" in args
    args = [a for a in args if a != "--pip-check"]
    if len(args) != 2 or not all(Path(a).is_dir() for a in args):
        print(f"usage: {argv[0]} [--pip-check] PATCHES_DIR SITE_PACKAGES_DIR", file=sys.stderr)
        return 2
    try:
        summary = apply_set(Path(args[0]), Path(args[1]))
    except PatchError as e:
        print(f"jupyter patches: {e}", file=sys.stderr)
        return 1
    if pip_check:
        out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            print(f"jupyter patches: pip check failed:\n{out.stdout}{out.stderr}", file=sys.stderr)
            return 1
    print("jupyter patches: " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
