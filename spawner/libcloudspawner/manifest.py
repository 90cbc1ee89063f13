"""The image build manifest (``images/manifest.json``): one versioned schema, read and written here only.

Pure: no libcloud, no spawner. ``invoke build-image`` / ``invoke publish-image`` write it (through
``devtools.images.manifest``, which builds on this module); the catalog reads it to offer the published
images. Schema 1::

    {"schema": 1,
     "images": [{"name": "debian-12-jupyter-20261125-1a2b3c4",   # the build
                 "os": "debian-12",                               # builds of one OS replace each other
                 "display_name": "Debian 12 · JupyterLab 4.6.6",  # shown in the form (default: name)
                 "published": {"devcloud": {"image_id": "3f0c...", "image_name": "debian-12-jupyter-...",
                                            "date": "..."}},
                 "default": false,
                 "date": ..., "git_commit": ..., "versions": {...}, "format": "qcow2", "path": ...,
                 "size_bytes": ..., "virtual_size_bytes": ..., "compressed_size_bytes": ..., "sha256": ...,
                 "builder": "qemu", "min_disk_gb": 8, "min_ram_mb": 1024,
                 "security_upgrades": "2026-12-05T07:50:53Z (3 package(s) upgraded)",
                 "packages": {"openssl": "3.0.22-1~deb12u2", ...},           # every installed package
                 "accounts": [{"name": "root", "uid": 0, "sudo": true},      # the image's accounts
                              {"name": "debian", "uid": null, "sudo": true, "source": "cloud-init"}, ...]}]}

``name``, ``os`` and ``published`` are required; the other fields are optional, but of their type when
present. Keys this schema does not name are kept (for people), never interpreted. ``security_upgrades``,
``packages`` and ``accounts`` were added to schema 1 as optional fields: entries written before them still
read, and a reader that does not know them keeps them uninterpreted. ``accounts`` lists the accounts of
``/etc/passwd`` and the one cloud-init creates as the image's default user (``uid`` null: made at boot);
``sudo`` says whether the account may become root through sudo. The spawner maps no hub user onto any of
them (:func:`account_names`).

Packer's own ``manifest`` post-processor output (``{"builds": [{"name", "artifact_id", "custom_data"}]}``)
is accepted too by ``parse_manifest``: it has no schema of ours, only its shape is checked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCHEMA = 1

_NONE = type(None)
#: the fields of an entry, in the order a writer emits them; keys not listed are kept, never interpreted
ENTRY_FIELDS = (
    "name", "os", "display_name", "date", "git_commit", "versions", "format", "path", "size_bytes",
    "virtual_size_bytes", "compressed_size_bytes", "sha256", "builder", "min_disk_gb", "min_ram_mb", "default",
    "security_upgrades", "packages", "accounts", "published",
)  # fmt: skip
REQUIRED_FIELDS = ("name", "os", "published")
#: accepted types -> the fields of that type
_TYPES: dict[tuple[type, ...], tuple[str, ...]] = {
    (str,): ("name", "os", "display_name", "date", "git_commit", "format", "builder", "security_upgrades"),
    (str, _NONE): ("path", "sha256"),
    (int, _NONE): ("size_bytes", "virtual_size_bytes", "compressed_size_bytes"),
    (int,): ("min_disk_gb", "min_ram_mb"),
    (bool,): ("default",),
    (dict,): ("versions", "published", "packages"),
    (list,): ("accounts",),
}
ENTRY_TYPES = {name: types for types, names in _TYPES.items() for name in names}

#: one cloud's copy of a build (``published.<cloud>``): every field a string, the image id required
PUBLISHED_FIELDS = ("image_id", "image_name", "date")
PUBLISHED_TYPES = dict.fromkeys(PUBLISHED_FIELDS, (str,))
#: one of the image's accounts (``accounts[i]``): the name required
ACCOUNT_TYPES: dict[str, tuple[type, ...]] = {"name": (str,), "uid": (int, _NONE), "sudo": (bool,), "source": (str,)}


class ManifestError(ValueError):
    """An image manifest that cannot be used: names the file (or source) and what is wrong with it."""

    def __init__(self, source: str | Path, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"image manifest {self.source}: {problem}")


def empty_manifest() -> dict:
    return {"schema": SCHEMA, "images": []}


def _type_names(types: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", dict: "an object", list: "a list",
             _NONE: "null"}  # fmt: skip
    return " or ".join(names[t] for t in types)


def _check_fields(
    obj: Any, types_of: Mapping[str, tuple[type, ...]], required: tuple[str, ...], where: str, source: str
) -> None:
    if not isinstance(obj, Mapping):
        raise ManifestError(source, f"{where} must be an object, not {type(obj).__name__}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise ManifestError(source, f"{where} lacks the field(s) {', '.join(missing)}")
    for key, types in types_of.items():
        if key not in obj:
            continue
        value = obj[key]
        # bool is an int to Python, not to JSON: an integer field refuses true/false
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ManifestError(source, f"{where}.{key} must be {_type_names(types)}, not {value!r}")
    if "name" in required and not obj["name"].strip():
        raise ManifestError(source, f"{where}.name must not be empty")


def check_entry(entry: Any, where: str = "entry", source: str = "manifest") -> dict:
    """``entry`` if it has the schema's shape (required fields, field types, ``published`` records)."""
    _check_fields(entry, ENTRY_TYPES, REQUIRED_FIELDS, where, source)
    for cloud, record in entry["published"].items():
        _check_fields(record, PUBLISHED_TYPES, ("image_id",), f"{where}.published.{cloud}", source)
    for package, version in entry.get("packages", {}).items():
        if not isinstance(version, str):
            raise ManifestError(source, f"{where}.packages.{package} must be a version string, not {version!r}")
    for index, account in enumerate(entry.get("accounts", [])):
        _check_fields(account, ACCOUNT_TYPES, ("name",), f"{where}.accounts[{index}]", source)
    return entry


def account_names(entry: Mapping) -> frozenset[str]:
    """The names of the accounts an entry records (none for entries written before ``accounts``)."""
    return frozenset(a["name"] for a in entry.get("accounts", ()) if isinstance(a, Mapping) and a.get("name"))


def check_entries(entries: Any, source: str = "manifest") -> list:
    """The ``images`` list, every entry checked with ``check_entry``."""
    if not isinstance(entries, list):
        raise ManifestError(source, f"'images' must be a list, not {type(entries).__name__}")
    for index, entry in enumerate(entries):
        check_entry(entry, f"images[{index}]", source)
    return entries


def is_packer_manifest(data: Any) -> bool:
    """Packer's ``manifest`` post-processor output rather than ours."""
    return isinstance(data, Mapping) and "builds" in data and "images" not in data


def parse_manifest(data: Any, source: str | Path = "manifest") -> dict:
    """``data`` (parsed JSON) checked: ours must be schema ``SCHEMA`` with well-formed entries; Packer's
    must have a ``builds`` list of objects. Raises ``ManifestError`` naming ``source`` and the problem."""
    source = str(source)
    if not isinstance(data, Mapping):
        raise ManifestError(source, "expected a JSON object with a 'schema' and an 'images' list")
    if is_packer_manifest(data):
        builds = data["builds"]
        if not isinstance(builds, list) or not all(isinstance(b, Mapping) for b in builds):
            raise ManifestError(source, "Packer's 'builds' must be a list of objects")
        return dict(data)
    if "images" not in data:
        raise ManifestError(source, "expected an 'images' list (or Packer's 'builds')")
    schema = data.get("schema")
    if schema != SCHEMA:
        found = "no 'schema' field" if "schema" not in data else f"schema {schema!r}"
        raise ManifestError(source, f"{found}; this version reads schema {SCHEMA} only")
    check_entries(data["images"], source)
    return dict(data)


def load_manifest(path: str | Path, *, missing_ok: bool = False) -> dict:
    """The manifest at ``path``, checked (``parse_manifest``). A missing file is an empty manifest if
    ``missing_ok``, else an error, as are unreadable JSON, an unknown schema and a malformed entry."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return empty_manifest()
        raise ManifestError(path, "no such file") from None
    except OSError as e:
        raise ManifestError(path, f"cannot read it: {e}") from e
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ManifestError(path, f"not valid JSON: {e}") from e
    return parse_manifest(data, path)


# --- writing ---------------------------------------------------------------------------------------------


def make_entry(**fields: Any) -> dict:
    """A new entry in the schema's field order; optional fields not given are left out, ``published``
    defaults to none. Checked like a read entry (unknown fields are refused here: a writer uses the schema)."""
    unknown = set(fields) - set(ENTRY_FIELDS)
    if unknown:
        raise ManifestError("(being written)", f"unknown field(s) {', '.join(sorted(unknown))}")
    fields.setdefault("published", {})
    return check_entry({k: fields[k] for k in ENTRY_FIELDS if k in fields}, "entry", "(being written)")


def published_record(image_id: str, image_name: str, date: str) -> dict:
    """One cloud's copy of a build, as ``published.<cloud>`` records it."""
    return {"image_id": image_id, "image_name": image_name, "date": date}


def dump_manifest(data: Mapping) -> str:
    """``data`` as the file's text, after the same check a reader makes."""
    parse_manifest(data, "manifest to write")
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def save_manifest(data: Mapping, path: str | Path) -> None:
    """Write ``data`` to ``path`` atomically (a spawner may be reading it)."""
    path = Path(path)
    text = dump_manifest(data)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
