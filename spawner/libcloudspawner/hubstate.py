"""Files a hub keeps beside its database (no JupyterHub, no libcloud): where they go.

A hub on SQLite keeps them in its database's directory, so that they move, are backed up and are lost
together with it; a hub on another database keeps them in its working directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


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
