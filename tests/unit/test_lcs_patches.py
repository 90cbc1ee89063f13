"""The image build step that applies the dependency patch set (images/packer/files/lcs_patches.py), run on
miniature site-packages: each patched file is made of its patches' own context lines (filler lines between the
hunks, at the stated line numbers), with a dist-info (METADATA, RECORD) per distribution. The import checks run
on tiny importable packages; one test runs the step on this venv's own JupyterHub and aiohttp files. The images
tier checks the built image (tests/images/test_offline.py)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.imagefiles import load_image_file

ROOT = Path(__file__).resolve().parents[2]
STEP = ROOT / "images" / "packer" / "files" / "lcs_patches.py"
PATCHES = ROOT / "images" / "packer" / "patches"
lcs = load_image_file("lcs_patches")

FILLER = "# filler\n"


def skeleton(hunks: list, side: str) -> str:
    """A file holding each hunk's ``side`` ("old" or "new") lines at the line the hunk states, filler between;
    all of it inside one raw string, so that it compiles (the step byte-compiles what it edits)."""
    lines = ["_ = r'''\n"]
    for hunk in hunks:
        start = hunk.old_start if side == "old" else hunk.new_start
        assert start > len(lines), "a hunk overlaps the skeleton's first line"
        lines += [FILLER] * (start - 1 - len(lines)) + getattr(hunk, side)
    return "".join([*lines, FILLER, "'''\n"])


def versions() -> dict[str, str]:
    """distribution -> the version its patch directory is for"""
    return dict(d.name.rsplit("-", 1) for d in PATCHES.iterdir() if d.is_dir())


def write_dist(site: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """The files, and a dist-info for them whose RECORD hashes them as an installer would."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    rows = []
    for path, text in {**files, f"{info.name}/METADATA": None}.items():
        if text is not None:
            (site / path).parent.mkdir(parents=True, exist_ok=True)
            (site / path).write_text(text)
        data = (site / path).read_bytes()
        rows.append(f"{path},{lcs.record_hash(data)},{len(data)}\n")
    (info / "RECORD").write_text("".join(rows) + f"{info.name}/RECORD,,\n")
    return info


def patched_files(name: str, version: str, side: str) -> dict[str, str]:
    patches = lcs.load_patches(PATCHES / f"{name}-{version}")
    return {fp.path: skeleton(fp.hunks, side) for p in patches for fp in p.files}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    for name, version in versions().items():
        write_dist(tmp_path, name, version, patched_files(name, version, "old"))
    return tmp_path


def snapshot(site: Path) -> dict[str, bytes]:
    return {p.relative_to(site).as_posix(): p.read_bytes() for p in sorted(site.rglob("*")) if p.is_file()}


def apply(site: Path):
    return lcs.apply_set(PATCHES, site, checks={})


@pytest.mark.parametrize("lock", ["requirements-debian-12.lock", "requirements-ubuntu-22.04.lock"])
@pytest.mark.parametrize("dist", ["jupyterhub", "aiohttp"])
def test_the_locked_version_has_a_patch_directory(lock: str, dist: str) -> None:
    text = (ROOT / "images" / "packer" / "files" / lock).read_text()
    pinned = re.search(rf"^{dist}==(\S+)", text, re.M)
    assert pinned, f"{dist} is not pinned in {lock}"
    assert (PATCHES / f"{dist}-{pinned.group(1)}").is_dir()
    assert sorted((PATCHES / f"{dist}-{pinned.group(1)}").glob("*.patch"))


def test_every_patch_has_a_header_saying_what_why_and_upstream_status() -> None:
    for patch in sorted(PATCHES.glob("*/*.patch")):
        header = patch.read_text().split("\n--- ", 1)[0]
        assert re.search(r"^Description: \S", header, re.M), patch.name
        assert re.search(r"^Why: \S", header, re.M), patch.name
        assert re.search(r"^Forwarded: \S", header, re.M), patch.name


def test_an_unknown_version_is_refused_naming_the_way_out_and_nothing_is_edited(site: Path) -> None:
    info = next(site.glob("jupyterhub-*.dist-info"))
    meta = info / "METADATA"
    meta.write_text(re.sub(r"^Version: .*$", "Version: 6.2.0", meta.read_text(), flags=re.M))
    before = snapshot(site)
    out = subprocess.run(
        [sys.executable, "-I", str(STEP), str(PATCHES), str(site)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert (
        "no patch for jupyterhub 6.2.0 in images/packer/patches/: add patches/jupyterhub-6.2.0/ or drop the edit"
        in out.stderr
    )
    assert snapshot(site) == before


def test_a_patched_distribution_that_is_not_installed_is_refused(site: Path) -> None:
    for info in site.glob("aiohttp-*.dist-info"):
        shutil.rmtree(info)
    with pytest.raises(lcs.PatchError, match=r"has patches for aiohttp .* which is not installed"):
        apply(site)


def test_every_patch_applies_and_the_files_are_what_the_patches_say(site: Path) -> None:
    summary = apply(site)
    for name, version in versions().items():
        for path, text in patched_files(name, version, "new").items():
            assert (site / path).read_text() == text, path
    assert summary["applied"] == [p.relative_to(PATCHES).as_posix() for p in sorted(PATCHES.glob("*/*.patch"))]


def test_record_matches_the_edited_files_and_lists_what_was_applied(site: Path) -> None:
    apply(site)
    for info in site.glob("*.dist-info"):
        assert lcs.record_mismatches(site, info) == []
        listed = {row[0]: row[1] for row in lcs._read_record(info)}
        applied = (info / lcs.APPLIED_FILE).read_text().splitlines()
        assert listed[f"{info.name}/{lcs.APPLIED_FILE}"].startswith("sha256=")
        assert [line.split()[0] for line in applied] == [
            p.relative_to(PATCHES).as_posix() for p in sorted(PATCHES.glob(f"{info.name.split('-')[0]}-*/*.patch"))
        ]
        for path in patched_files(*info.name.removesuffix(".dist-info").rsplit("-", 1), "new"):
            assert listed[path] == lcs.record_hash((site / path).read_bytes())


def test_a_second_run_changes_nothing(site: Path) -> None:
    apply(site)
    first = {k: v for k, v in snapshot(site).items() if "__pycache__" not in k}
    texts, states = lcs.dry_run(site, lcs.load_patches(PATCHES / "jupyterhub-6.1.1"))
    assert texts == {} and {state for _, state in states} == {"already applied"}
    apply(site)
    assert {k: v for k, v in snapshot(site).items() if "__pycache__" not in k} == first


def test_a_reinstalled_file_is_patched_again(site: Path) -> None:
    """``pip install --force-reinstall`` puts back the published file: the next run applies that patch only."""
    apply(site)
    patch = lcs.load_patches(PATCHES / "jupyterhub-6.1.1")[2]
    path = patch.files[0].path
    (site / path).write_text(skeleton(patch.files[0].hunks, "old"))
    _, states = lcs.dry_run(site, lcs.load_patches(PATCHES / "jupyterhub-6.1.1"))
    assert [state for name, state in states if name == patch.name] == ["applied"]
    assert {state for name, state in states if name != patch.name} == {"already applied"}
    apply(site)
    assert lcs.record_mismatches(site, next(site.glob("jupyterhub-*.dist-info"))) == []


def test_a_patch_that_does_not_apply_leaves_every_file_unedited(site: Path) -> None:
    """The last patch of the set fails (a reworded upstream line): the earlier ones, which would apply, are not
    written either."""
    last = lcs.load_patches(PATCHES / "jupyterhub-6.1.1")[-1]
    target = site / last.files[0].path
    removed = next(line for line in last.files[0].hunks[-1].old if line not in last.files[0].hunks[-1].new)
    target.write_text(target.read_text().replace(removed, removed.replace("except", "except  ", 1)))
    before = snapshot(site)
    with pytest.raises(lcs.PatchError) as e:
        apply(site)
    assert f"{last.name} does not apply" in str(e.value)
    assert "refresh the patch against the installed release or drop it" in str(e.value)
    assert snapshot(site) == before


def test_a_hunk_moved_by_upstream_lines_still_applies_where_its_context_is_unique(site: Path) -> None:
    path = site / "aiohttp" / "connector.py"
    path.write_text("# two new lines upstream\n# above the patched code\n" + path.read_text())
    apply(site)
    assert path.read_text().startswith("# two new lines upstream\n")
    assert "_default_ssl_context(True)" in path.read_text()


def test_a_hunk_whose_context_occurs_twice_is_refused() -> None:
    hunk = lcs.Hunk(5, 5, ["a\n", "b\n"], ["a\n", "c\n"])
    with pytest.raises(lcs.PatchError, match="occur 2 times"):
        lcs.apply_hunks("a\nb\nx\na\nb\n", [hunk])


def test_a_failing_import_check_stops_the_step(site: Path) -> None:
    checks = {"jupyterhub": ("a check that finds something", "print('[\"sqlalchemy\"]')")}
    with pytest.raises(lcs.PatchError, match=r"after patching, a check that finds something: it does not hold"):
        lcs.apply_set(PATCHES, site, checks=checks)


# the import checks on tiny packages: each sees the import it guards, and passes once it is gone
HEAVY_HUB = {
    "jupyterhub/__init__.py": "",
    "jupyterhub/singleuser/__init__.py": "from .. import orm\n",
    "jupyterhub/orm.py": "import sqlalchemy\n",
    "sqlalchemy/__init__.py": "",
}
HEAVY_AIOHTTP = {
    "aiohttp/__init__.py": "",
    "aiohttp/connector.py": "import ssl\n_SSL_CONTEXT_UNVERIFIED = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n",
}


@pytest.mark.parametrize(
    ("dist", "heavy", "light", "seen"),
    [
        ("jupyterhub", HEAVY_HUB, {**HEAVY_HUB, "jupyterhub/singleuser/__init__.py": ""}, "jupyterhub.orm, sqlalchemy"),
        ("aiohttp", HEAVY_AIOHTTP, {**HEAVY_AIOHTTP, "aiohttp/connector.py": "import ssl\n"}, "SSLContext"),
    ],
)
def test_the_import_check_sees_what_it_guards(tmp_path: Path, dist: str, heavy: dict, light: dict, seen: str) -> None:
    for name, files in (("heavy", heavy), ("light", light)):
        for path, text in files.items():
            (tmp_path / name / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / path).write_text(text)
    failed = lcs.import_check(tmp_path / "heavy", dist, lcs.CHECKS)
    assert failed is not None and "it does not hold" in failed and seen in failed
    assert lcs.import_check(tmp_path / "light", dist, lcs.CHECKS) is None


def test_this_venvs_jupyterhub_and_aiohttp_are_patched_or_refused(tmp_path: Path) -> None:
    """The published files of the releases installed here (copied), with the real import checks: a release
    with a patch directory is patched and passes them; another is refused by name."""
    installed = {}
    for dist in ("jupyterhub", "aiohttp"):
        package = Path(importlib.util.find_spec(dist).origin).parent  # type: ignore[union-attr,arg-type]
        version, info = lcs.installed(package.parent)[dist]
        shutil.copytree(package, tmp_path / dist, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(info, tmp_path / info.name)
        installed[dist] = version
    known = versions()
    out = subprocess.run(
        [sys.executable, "-I", str(STEP), str(PATCHES), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    if all(known[d] == v for d, v in installed.items()):
        assert out.returncode == 0, out.stderr
        for info in tmp_path.glob("*.dist-info"):
            assert lcs.record_mismatches(tmp_path, info) == []
    else:
        assert out.returncode == 1
        assert "no patch for" in out.stderr and "or drop the edit" in out.stderr


def test_usage(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-I", str(STEP), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "usage:" in out.stderr
