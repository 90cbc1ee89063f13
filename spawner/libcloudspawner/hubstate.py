"""Files a hub keeps beside its database (no JupyterHub, no libcloud): where they go, and the hub's id.

A hub on SQLite keeps them in its database's directory, so that they move, are backed up and are lost
together with it; a hub on another database keeps them in its working directory.

The hub's id (the ``jupyterhub-hub-id`` tag of its instances) defaults to one generated once,
``hub-`` + 12 random hex digits, kept in ``libcloudspawner-hub-id`` there and read again after every restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any

HUB_ID_FILE = "libcloudspawner-hub-id"
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_HUB_IDS: dict[Path, str] = {}


def state_directory(db_url: Any, cwd: str | os.PathLike | None = None) -> Path:
    """The directory of the hub's own files for ``db_url`` (a string or SQLAlchemy URL; ``None``: no
    database known). ``cwd``: the hub's working directory (default: this process's)."""
    base = Path(cwd if cwd is not None else os.getcwd())
    if db_url is None:
        return base
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    if not url.drivername.startswith("sqlite") or not url.database or url.database == ":memory:":
        return base
    return (base / url.database).parent


def new_hub_id() -> str:
    return "hub-" + secrets.token_hex(6)


def read_hub_id(directory: Path) -> str:
    """The id kept in ``directory``; ``OSError`` if there is none, ``ValueError`` if it is not an id."""
    path = directory / HUB_ID_FILE
    value = path.read_text().strip()
    if not _HUB_ID_RE.match(value):
        raise ValueError(f"{path} does not hold a hub id")
    return value


def hub_id(directory: Path, log: Any) -> str:
    """The id of the hub whose files are in ``directory``: read once per process, generated (atomically, so
    that two processes starting together agree) when there is none yet. Logged when first read or made."""
    path = (directory / HUB_ID_FILE).resolve()
    if path in _HUB_IDS:
        return _HUB_IDS[path]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".hub-id-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(new_hub_id() + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if the file exists: never replaces an id in use
        how = "generated and kept in"
    except FileExistsError:
        how = "read from"
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _HUB_IDS[path] = read_hub_id(path.parent)
    log.info(
        "LibcloudSpawner hub_id %s (%s %s; set c.LibcloudSpawner.hub_id when several hubs share a cloud project)",
        _HUB_IDS[path], how, path,
    )  # fmt: skip
    return _HUB_IDS[path]


def read_records(path: Path, what: str) -> list[dict[str, Any]]:
    """The entries (dicts naming an ``instance_id``) of a JSON record file beside the hub's database; none if
    there is no file. ``what`` names the record in the error raised when it cannot be read."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise OSError(f"{what} {path} cannot be read: {e}") from e
    return [e for e in data if isinstance(e, dict) and e.get("instance_id")] if isinstance(data, list) else []


def write_records(path: Path, entries: list[dict[str, Any]]) -> None:
    """Replace the record file atomically: written to a temporary file, fsynced, renamed, directory fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(entries, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
