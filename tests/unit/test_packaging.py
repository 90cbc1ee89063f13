"""The wheel an administrator installs carries the cloud-init template and the entry points."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"pip wheel failed:\n{result.stdout}\n{result.stderr[-3000:]}"
    [path] = out.glob("jupyter_libcloudspawner-*.whl")
    return path


def test_wheel_contains_the_template_and_the_modules(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "libcloudspawner/cloudinit/singleuser.yaml.j2" in names
    for module in ("spawner", "cloud", "naming", "options", "catalog", "userdata", "config"):
        assert f"libcloudspawner/{module}.py" in names


def test_wheel_registers_the_spawner_entry_point(wheel):
    archive = zipfile.ZipFile(wheel)
    [entry_points] = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = archive.read(entry_points).decode()
    assert "[jupyterhub.spawners]" in text
    assert "libcloud = libcloudspawner.spawner:LibcloudSpawner" in text


def test_installed_wheel_renders_from_its_own_template(wheel, tmp_path):
    zipfile.ZipFile(wheel).extractall(tmp_path)
    code = (
        "import libcloudspawner.userdata as u, pathlib, sys;"
        f"assert pathlib.Path(u.__file__).is_relative_to({str(tmp_path)!r}), u.__file__;"
        "doc = u.render_userdata(username='alice', env={'A': 'b'}, cmd=['jupyterhub-singleuser']);"
        "assert doc.startswith('#cloud-config')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": str(tmp_path)}, cwd=tmp_path,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
