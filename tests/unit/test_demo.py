"""`invoke demo` picks the image it publishes from the manifest: a local build whose qcow2 is on disk."""

from __future__ import annotations

import json

import devtools.demo as demo


def _entry(name: str, path: str | None, builder: str) -> dict:
    return {"name": name, "os": "debian-12", "path": path, "builder": builder, "published": {}}


def test_openstack_builds_have_no_file_and_are_passed_over(tmp_path, monkeypatch):
    (tmp_path / "images" / "output").mkdir(parents=True)
    (tmp_path / "images" / "output" / "local.qcow2").write_bytes(b"qcow2")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"schema": 1, "images": [
        _entry("local", "images/output/local.qcow2", "qemu"),
        _entry("gone", "images/output/gone.qcow2", "qemu"),  # its file was deleted
        _entry("baked-in-the-cloud", None, "openstack"),  # newest: registered in Glance, no local file
    ]}))  # fmt: skip
    monkeypatch.setattr(demo, "MANIFEST", manifest)
    monkeypatch.setattr(demo, "ROOT", tmp_path)
    assert demo._built_image()["name"] == "local"


def test_no_manifest_means_no_image(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "MANIFEST", tmp_path / "absent.json")
    assert demo._built_image() is None
