"""The image build step that keeps work a server start does not need out of it
(images/packer/files/lcs_start_edits.py), run for real on a miniature ``jupyterhub`` package laid out line for
line like JupyterHub 6's five files, with stand-ins for SQLAlchemy and Alembic that record being imported, and a
miniature ``aiohttp/connector.py`` laid out like aiohttp 3.14's, whose context factory records each context made.
The images tier checks the real JupyterHub and aiohttp in the built image (tests/images/test_offline.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.imagefiles import IMAGE_FILES, load_image_file

STEP = IMAGE_FILES / "lcs_start_edits.py"
STEP_MODULE = load_image_file("lcs_start_edits")

FILES = {
    "jupyterhub/__init__.py": "",
    "jupyterhub/dbutil.py": "_temp_alembic_ini = 'ini'\n",
    "jupyterhub/httpclient.py": "def fetch():\n    return None\n",
    "jupyterhub/handlers/__init__.py": "",
    "jupyterhub/handlers/pages.py": "class HealthCheckHandler:\n    pass\n",
    "jupyterhub/orm.py": '''"""orm"""
import json

import alembic.command
import alembic.config
from alembic.script import ScriptDirectory


class Base:
    pass


def check_db_revision(engine):
    from .dbutil import _temp_alembic_ini

    return (alembic.command.NAME, alembic.config.NAME, ScriptDirectory.NAME, _temp_alembic_ini, json.__name__)
''',
    "jupyterhub/roles.py": "def get_roles_for(obj):\n    return ['user']\n",
    "jupyterhub/metrics.py": '''"""metrics"""
from . import orm
from .utils import fetch


def prometheus_log_method(handler):
    return fetch


def count_users():
    return orm.Base.__name__
''',
    "jupyterhub/scopes.py": '''"""scopes"""
from functools import lru_cache

import sqlalchemy as sa

from . import orm, roles


def get_scopes_for(obj):
    if not isinstance(obj, orm.Base):
        raise TypeError(obj)
    return roles.get_roles_for(obj), sa.inspect(obj)
''',
    "jupyterhub/utils.py": '''"""utils"""
import os

from sqlalchemy.exc import SQLAlchemyError

from .httpclient import fetch


def catch_db_error(f):
    def wrapped():
        try:
            return f()
        except SQLAlchemyError:
            return "rolled back"

    return wrapped
''',
    "jupyterhub/log.py": '''"""log"""
import logging


class StaticFileHandler:
    pass


from .handlers.pages import HealthCheckHandler
from .metrics import prometheus_log_method


def log_level(handler, status):
    if status == 304 or (
        status < 300 and isinstance(handler, StaticFileHandler | HealthCheckHandler)
    ):
        return logging.DEBUG
    return logging.INFO
''',
    "sqlalchemy/__init__.py": "def inspect(obj):\n    return 'inspected'\n",
    "sqlalchemy/exc.py": "class SQLAlchemyError(Exception):\n    pass\n",
    "alembic/__init__.py": "",
    "alembic/command.py": "NAME = 'command'\n",
    "alembic/config.py": "NAME = 'config'\n",
    "alembic/script.py": "class ScriptDirectory:\n    NAME = 'script'\n",
    "aiohttp/__init__.py": "",
    "aiohttp/connector.py": '''import asyncio
import functools

try:
    import ssl

    SSLContext = ssl.SSLContext
except ImportError:  # pragma: no cover
    ssl = None  # type: ignore[assignment]
    SSLContext = object  # type: ignore[misc,assignment]

MADE = []


def _make_ssl_context(verified: bool) -> SSLContext:
    """Create SSL context."""
    MADE.append(verified)
    return ("context", verified, len(MADE))


# The default SSLContext objects are created at import time
# since they do blocking I/O to load certificates from disk,
# and imports should always be done before the event loop starts
# or in a thread.
_SSL_CONTEXT_VERIFIED = _make_ssl_context(True)
_SSL_CONTEXT_UNVERIFIED = _make_ssl_context(False)


class TCPConnector:
    def __init__(self, ssl=True):
        self._ssl = ssl

    def _get_ssl_context(self, req):
        if not req.is_ssl():
            return None

        if ssl is None:  # pragma: no cover
            raise RuntimeError("SSL is not supported.")
        sslcontext = req.ssl
        if isinstance(sslcontext, ssl.SSLContext):
            return sslcontext
'''
    # the rest of _get_ssl_context: the very lines the step replaces (aiohttp 3.14's, kept in the step)
    + STEP_MODULE.GET_SSL_CONTEXT_TAIL,
}

EDITED = [
    "jupyterhub/orm.py",
    "jupyterhub/log.py",
    "jupyterhub/metrics.py",
    "jupyterhub/scopes.py",
    "jupyterhub/utils.py",
    "aiohttp/connector.py",
]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    for name, text in FILES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def run_step(site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", str(STEP), str(site)], capture_output=True, text=True, timeout=60)


def in_site(site: Path, code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r})\n{code}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


HEAVY = "['jupyterhub.orm', 'jupyterhub.roles', 'jupyterhub.handlers.pages', 'sqlalchemy', 'alembic']"


def test_the_step_defers_the_imports_and_keeps_what_the_hub_needs(site: Path) -> None:
    loaded = "sorted(m for m in " + HEAVY + " if m in sys.modules)"
    before = in_site(
        site, f"import json, jupyterhub.log, jupyterhub.scopes, jupyterhub.utils\nprint(json.dumps({loaded}))"
    )
    assert before == ["alembic", "jupyterhub.handlers.pages", "jupyterhub.orm", "jupyterhub.roles", "sqlalchemy"]

    out = run_step(site)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"jupyter: {name}: deferred" for name in EDITED]

    result = in_site(
        site,
        f"""import json, logging
from jupyterhub import log, metrics, scopes, utils
r = {{"loaded at import": {loaded}}}
r["info for another handler"] = log.log_level(object(), 200) == logging.INFO
r["no import for that check"] = {loaded}
from jupyterhub.handlers.pages import HealthCheckHandler
r["debug for a health check"] = log.log_level(HealthCheckHandler(), 200) == logging.DEBUG
from jupyterhub import orm
r["scopes"] = list(scopes.get_scopes_for(orm.Base()))
r["rebound"] = [scopes.orm is orm, scopes.roles.__name__, scopes.sa.__name__, metrics.orm is orm]
r["metrics"] = metrics.count_users()
import sqlalchemy.exc
def db_error():
    raise sqlalchemy.exc.SQLAlchemyError()
def other_error():
    raise KeyError("x")
r["caught"] = utils.catch_db_error(db_error)()
try:
    utils.catch_db_error(other_error)()
except KeyError:
    r["other errors pass"] = True
r["alembic still there for the hub"] = list(orm.check_db_revision(None))
print(json.dumps(r))
""",
    )
    assert result == {
        "loaded at import": [],
        "info for another handler": True,
        "no import for that check": [],
        "debug for a health check": True,
        "scopes": [["user"], "inspected"],
        "rebound": [True, "jupyterhub.roles", "sqlalchemy", False],
        "metrics": "Base",
        "caught": "rolled back",
        "other errors pass": True,
        "alembic still there for the hub": ["command", "config", "script", "ini", "json"],
    }


AIOHTTP_REQUESTS = """import json, ssl
from aiohttp import connector

class Req:
    def __init__(self, url, ssl_):
        self.url, self.ssl = url, ssl_

    def is_ssl(self):
        return self.url.startswith("https:")

mine = ssl.create_default_context()
r = {"made at import": list(connector.MADE)}
answers = [
    connector.TCPConnector()._get_ssl_context(Req("http://hub:8081/hub/api", True)),
    connector.TCPConnector()._get_ssl_context(Req("https://pypi.org/", True)),
    connector.TCPConnector()._get_ssl_context(Req("https://pypi.org/", False)),
    connector.TCPConnector(ssl=False)._get_ssl_context(Req("https://pypi.org/", True)),
    connector.TCPConnector()._get_ssl_context(Req("https://pypi.org/", True)),
]
r["answers"] = [a[:2] if isinstance(a, tuple) else a for a in answers]
r["same object each time"] = answers[1] is answers[4] and answers[2] is answers[3]
r["own context passed through"] = connector.TCPConnector()._get_ssl_context(Req("https://x/", mine)) is mine
r["made"] = list(connector.MADE)
from aiohttp.connector import _SSL_CONTEXT_UNVERIFIED, _SSL_CONTEXT_VERIFIED
r["old names"] = [_SSL_CONTEXT_VERIFIED is answers[1], _SSL_CONTEXT_UNVERIFIED is answers[2], len(connector.MADE)]
try:
    connector.NO_SUCH_NAME
except AttributeError as e:
    r["other names"] = str(e)
print(json.dumps(r))
"""


def test_aiohttp_makes_its_default_tls_contexts_on_first_use(site: Path) -> None:
    """aiohttp built both default contexts (each a parse of the CA bundle) at import; after the step, none at
    import, each on the first HTTPS request that needs it, then the same object, and the same answers."""
    before = in_site(site, AIOHTTP_REQUESTS)
    assert before["made at import"] == [True, False]
    assert run_step(site).returncode == 0
    after = in_site(site, AIOHTTP_REQUESTS)
    assert after["made at import"] == []
    assert after["answers"] == before["answers"] == [
        None,  # plain HTTP (the hub's API): no context at all
        ["context", True],
        ["context", False],
        ["context", False],
        ["context", True],
    ]
    assert after["same object each time"] and before["same object each time"]
    assert after["own context passed through"]
    assert after["made"] == [True, False]  # one of each, made when first asked for
    # the old module-level names still import (aiohttp's own tests use them): the same, kept objects
    assert after["old names"] == before["old names"] == [True, True, 2]
    assert after["other names"] == before["other names"] == "module 'aiohttp.connector' has no attribute 'NO_SUCH_NAME'"


def test_a_use_of_the_old_names_the_edits_miss_stops_the_build(site: Path) -> None:
    """A new reference to a module-level context elsewhere in the file would be a NameError once the globals are
    gone: the step refuses and edits no file."""
    connector = site / "aiohttp" / "connector.py"
    connector.write_text(connector.read_text() + "\n\ndef default_context():\n    return _SSL_CONTEXT_VERIFIED\n")
    originals = {name: (site / name).read_text() for name in EDITED}
    out = run_step(site)
    assert out.returncode == 1
    assert "aiohttp/connector.py is not laid out as" in out.stderr
    assert "_SSL_CONTEXT_" in out.stderr
    assert {name: (site / name).read_text() for name in EDITED} == originals


def test_a_second_run_changes_nothing(site: Path) -> None:
    assert run_step(site).returncode == 0
    first = {name: (site / name).read_text() for name in EDITED}
    out = run_step(site)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"jupyter: {name}: already deferred" for name in EDITED]
    assert {name: (site / name).read_text() for name in EDITED} == first


def test_a_changed_layout_stops_the_build_and_edits_no_file(site: Path) -> None:
    utils = site / "jupyterhub" / "utils.py"
    utils.write_text(utils.read_text().replace("except SQLAlchemyError:", "except (SQLAlchemyError, OSError):"))
    originals = {name: (site / name).read_text() for name in EDITED}
    out = run_step(site)
    assert out.returncode == 1
    assert "jupyterhub/utils.py is not laid out as" in out.stderr
    assert "except SQLAlchemyError:" in out.stderr  # what it looked for
    assert {name: (site / name).read_text() for name in EDITED} == originals


def test_an_import_already_gone_upstream_is_left_alone(site: Path) -> None:
    metrics = site / "jupyterhub" / "metrics.py"
    lazy = metrics.read_text().replace("from . import orm\n", "").replace("orm.Base", "__import__('x').Base")
    metrics.write_text(lazy)
    out = run_step(site)
    assert out.returncode == 0, out.stderr
    assert "jupyter: jupyterhub/metrics.py: nothing to defer" in out.stdout.splitlines()
    assert metrics.read_text() == lazy


def test_usage(tmp_path: Path) -> None:
    out = run_step(tmp_path)
    assert out.returncode == 2
    assert "usage:" in out.stderr
