"""The image manifest's one schema: what a reader accepts, what it refuses and how it says so."""

from __future__ import annotations

import json

import pytest

from libcloudspawner.catalog import CatalogError
from libcloudspawner.catalog import load_manifest as catalog_load_manifest
from libcloudspawner.manifest import (
    SCHEMA,
    ManifestError,
    account_names,
    empty_manifest,
    load_manifest,
    make_entry,
    parse_manifest,
    published_record,
    save_manifest,
)

PUBLISHED = {"devcloud": {"image_id": "uuid-1", "image_name": "deb-1", "date": "2026-11-25T22:50:12+00:00"}}


def entry(**changes) -> dict:
    """A well-formed entry as `invoke build-image` writes it, with ``changes`` (None deletes a field)."""
    base = {
        "name": "deb-1", "os": "debian-12", "display_name": "Debian 12", "date": "2026-11-25T22:33:26Z",
        "git_commit": "0" * 40, "versions": {"python": "3.11.2"}, "format": "qcow2",
        "path": "images/output/deb-1.qcow2", "size_bytes": 1, "virtual_size_bytes": 2, "compressed_size_bytes": None,
        "sha256": "a" * 64, "builder": "qemu", "min_disk_gb": 8, "min_ram_mb": 1024, "published": PUBLISHED,
    }  # fmt: skip
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None or k not in changes}


#: the optional fields added to schema 1 after its first entries were written
NEWER_FIELDS = {
    "security_upgrades": "2026-12-05T10:45:36Z (2 package(s) upgraded)",
    "packages": {"openssl": "3.0.22-1~deb12u2"},
    "accounts": [{"name": "root", "uid": 0, "sudo": True}, {"name": "debian", "uid": None, "sudo": True}],
}

GOOD = [
    ("one full entry", {"schema": SCHEMA, "images": [entry()]}),
    ("no images yet", {"schema": SCHEMA, "images": []}),
    ("only the required fields", {"schema": SCHEMA, "images": [{"name": "n", "os": "o", "published": {}}]}),
    ("a field for people only", {"schema": SCHEMA, "images": [entry(note="rebuilt after the CA change")]}),
    ("packages, accounts and the security upgrade", {"schema": SCHEMA, "images": [entry(**NEWER_FIELDS)]}),
    ("Packer's own manifest", {"builds": [{"name": "qemu", "artifact_id": "abc"}]}),
]


@pytest.mark.parametrize("data", [d for _, d in GOOD], ids=[i for i, _ in GOOD])
def test_a_good_file_loads_as_written(tmp_path, data):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    assert load_manifest(path) == data


BAD = [
    ("unknown schema", {"schema": 2, "images": []}, "schema 2; this version reads schema 1 only"),
    ("no schema", {"images": []}, "no 'schema' field; this version reads schema 1 only"),
    ("schema as a string", {"schema": "1", "images": []}, "schema '1'"),
    ("not an object", [], "expected a JSON object"),
    ("no images", {"schema": SCHEMA}, "expected an 'images' list"),
    ("images not a list", {"schema": SCHEMA, "images": {}}, "'images' must be a list"),
    ("entry not an object", {"schema": SCHEMA, "images": [1]}, "images[0] must be an object"),
    ("missing name", {"schema": SCHEMA, "images": [entry(name=None)]}, "images[0] lacks the field(s) name"),
    ("missing os and published", {"schema": SCHEMA, "images": [{"name": "n"}]}, "lacks the field(s) os, published"),
    ("empty name", {"schema": SCHEMA, "images": [entry(name=" ")]}, "images[0].name must not be empty"),
    ("published a list", {"schema": SCHEMA, "images": [entry(published=[])]}, "published must be an object"),
    ("size a string", {"schema": SCHEMA, "images": [entry(size_bytes="1")]}, "size_bytes must be an integer or null"),
    ("min_disk_gb a bool", {"schema": SCHEMA, "images": [entry(min_disk_gb=True)]}, "min_disk_gb must be an integer"),
    ("default not a bool", {"schema": SCHEMA, "images": [entry(default="yes")]}, "default must be true or false"),
    ("accounts an object", {"schema": SCHEMA, "images": [entry(accounts={})]}, "accounts must be a list"),
    ("account without name", {"schema": SCHEMA, "images": [entry(accounts=[{"uid": 0}])]}, "accounts[0] lacks"),
    (
        "account sudo a string",
        {"schema": SCHEMA, "images": [entry(accounts=[{"name": "a", "sudo": "no"}])]},
        "accounts[0].sudo must be true or false",
    ),
    (
        "package version a number",
        {"schema": SCHEMA, "images": [entry(packages={"bash": 5})]},
        "packages.bash must be a version string",
    ),
    (
        "published without image id",
        {"schema": SCHEMA, "images": [entry(published={"devcloud": {"image_name": "x"}})]},
        "images[0].published.devcloud lacks the field(s) image_id",
    ),
    ("Packer builds not objects", {"builds": ["qemu"]}, "Packer's 'builds' must be a list of objects"),
]


@pytest.mark.parametrize(("data", "problem"), [(d, p) for _, d, p in BAD], ids=[i for i, _, _ in BAD])
def test_a_bad_file_is_refused_naming_the_file_and_the_problem(tmp_path, data, problem):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.source == str(path)
    assert problem in info.value.problem
    assert str(info.value).startswith(f"image manifest {path}: ")


@pytest.mark.parametrize(
    ("content", "problem"), [(None, "no such file"), ("{not json", "not valid JSON")], ids=["missing", "not JSON"]
)
def test_an_unreadable_file_is_refused(tmp_path, content, problem):
    path = tmp_path / "manifest.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ManifestError, match=problem):
        load_manifest(path)


def test_a_missing_file_may_stand_for_an_empty_manifest(tmp_path):
    assert load_manifest(tmp_path / "none.json", missing_ok=True) == empty_manifest()


def test_the_manifest_error_is_a_value_error():
    assert issubclass(ManifestError, ValueError)


def test_the_catalog_reports_an_unknown_schema_as_a_catalog_error(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"schema": 99, "images": []}))
    with pytest.raises(CatalogError, match=f"image manifest {path}: schema 99"):
        catalog_load_manifest(path)


def test_what_a_writer_saves_a_reader_loads(tmp_path):
    new = make_entry(name="deb-2", os="debian-12", min_disk_gb=8)
    new["published"]["devcloud"] = published_record("uuid-2", "deb-2", "2026-11-26T00:00:00+00:00")
    path = tmp_path / "manifest.json"
    save_manifest({"schema": SCHEMA, "images": [new]}, path)
    assert load_manifest(path)["images"] == [new]
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temporary file left


def test_a_writer_follows_the_schema_field_order():
    assert list(make_entry(published={}, os="o", name="n")) == ["name", "os", "published"]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"name": "n", "os": "o", "colour": "red"}, "unknown field(s) colour"),
        ({"name": "n"}, "entry lacks the field(s) os"),
    ],
)
def test_a_writer_cannot_make_an_entry_outside_the_schema(fields, problem):
    with pytest.raises(ManifestError) as info:
        make_entry(**fields)
    assert info.value.problem.endswith(problem)


def test_a_malformed_manifest_is_never_written(tmp_path):
    path = tmp_path / "manifest.json"
    with pytest.raises(ManifestError, match="lacks the field"):
        save_manifest({"schema": SCHEMA, "images": [{"name": "n"}]}, path)
    assert not path.exists()


def test_parse_names_its_source():
    with pytest.raises(ManifestError, match="image manifest from-memory: schema 3"):
        parse_manifest({"schema": 3, "images": []}, "from-memory")


def test_an_entry_written_before_packages_and_accounts_still_reads(tmp_path):
    """Entries of schema 1 without the later optional fields: read as they are, with no accounts."""
    old = entry()
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"schema": SCHEMA, "images": [old]}))
    [read] = load_manifest(path)["images"]
    assert read == old and account_names(read) == frozenset()


def test_account_names():
    accounts = [{"name": "root", "uid": 0, "sudo": True}, {"name": "debian", "uid": None, "sudo": True}]
    assert account_names(entry(accounts=accounts)) == {"root", "debian"}


def test_make_entry_takes_packages_and_accounts():
    made = make_entry(name="n", os="o", packages={"bash": "5.2"}, accounts=[{"name": "root"}])
    assert list(made) == ["name", "os", "packages", "accounts", "published"]
