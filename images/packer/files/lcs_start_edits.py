"""Build step: keep work that a single-user server's start does not need out of every start.

Usage (by ``scripts/common/30-jupyter.sh``, as root, in the image's venv)::

    /opt/jupyter/bin/python -I lcs_start_edits.py SITE_PACKAGES_DIR

Counted with ``valgrind --tool=callgrind`` (Debian 12's Python, this image's lock,
``benchmarks/start_instructions.py``; figures in docs/images.md): a whole server start, until it answers, runs
about 45% fewer instructions in this image than with JupyterHub and aiohttp as published. Two kinds of edits:

**JupyterHub's hub-only imports.** A ``jupyterhub-singleuser`` process never opens a database, yet importing
``jupyterhub.singleuser`` imports the hub's ORM: SQLAlchemy (about 140 modules), Alembic with Mako, Pygments and
two more SQL dialects, and the hub's request handlers, user and spawner classes (3.27 G instructions to import
``jupyterhub.singleuser`` as published, 2.04 G with these edits; 1103 modules loaded before, 806 after):

- ``orm.py`` imports Alembic at module level for ``check_db_revision``, which only the hub calls: the three
  imports move into that function.
- ``log.py`` imports ``handlers.pages`` (and with it the hub's handlers, ORM, users, spawners) for one
  ``isinstance(handler, HealthCheckHandler)``: the check looks the class up in ``sys.modules`` instead. A
  handler of that class can only exist once its module is loaded, so the result is the same.
- ``metrics.py`` and ``scopes.py`` import ``orm`` (and ``scopes.py`` SQLAlchemy and ``roles``) for functions
  only the hub calls; a single-user server's scope check (``_intersect_expanded_scopes`` without a database)
  never touches them. They become lazy module references: the first attribute access imports the module and
  rebinds the global to it, so the hub pays one import and then nothing.
- ``utils.py`` imports ``sqlalchemy.exc`` (which imports all of SQLAlchemy) for one ``except`` clause in the
  hub's ``catch_db_error``: the class is looked up when that clause is reached.

**aiohttp's import-time TLS contexts.** ``aiohttp/connector.py`` builds its two default client SSL contexts
(verifying and not) when it is imported, and each loads and parses the system's whole CA bundle: 0.48 G
instructions, a sixth of a server's start, in a process whose only aiohttp client talks plain HTTP to the hub
(JupyterHub 6's ``httpclient``). The edit makes each context on its first use, once, by the same function and
with the same settings; ``_get_ssl_context`` returns it as before. The cost moves to the first HTTPS request
(one CA bundle parse, about 30 ms natively), which aiohttp had avoided doing inside the event loop.

Every edit replaces exact text. A file already edited (marker) is left alone, so the step is idempotent; a
file whose heavy work is gone has nothing to defer. Any other difference (a new release changed the lines)
stops the build with the file's name: whoever updates the lock looks at it. The image tests check the result
from both sides: a server start imports no SQLAlchemy and makes no TLS context, and the image's hub modules
still create, stamp and query a database, and aiohttp's contexts still verify. These edits belong upstream in
JupyterHub and aiohttp; until then the image carries them.
"""

from __future__ import annotations

import py_compile
import re
import sys
from pathlib import Path

MARKER = "# lcs: start-up work deferred by images/packer/files/lcs_start_edits.py\n"

LAZY_MODULE = '''\
class _LcsLazyModule:
    """A module imported on first attribute access; the global then names the module itself (lcs)."""

    def __init__(self, name, var):
        self._lcs_target = (name, var)

    def __getattr__(self, attr):
        import importlib

        name, var = self._lcs_target
        module = importlib.import_module(name)
        globals()[var] = module
        return getattr(module, attr)


'''

HEALTH_CHECK = '''\
def _lcs_is_health_check(handler):
    """isinstance(handler, HealthCheckHandler), without importing the hub's handlers (lcs)."""
    import sys

    pages = sys.modules.get("jupyterhub.handlers.pages")
    return pages is not None and isinstance(handler, pages.HealthCheckHandler)


'''

SQLALCHEMY_ERROR = '''\
def _lcs_sqlalchemy_error():
    """sqlalchemy.exc.SQLAlchemyError, imported when an except clause needs it (lcs)."""
    from sqlalchemy.exc import SQLAlchemyError

    return SQLAlchemyError


'''


class Edit:
    """One file: exact (old, new) replacements, each old text present exactly once; ``heavy`` matches the
    module-level work that the edits remove (absent: nothing to defer)."""

    def __init__(self, path: str, heavy: str, pairs: list[tuple[str, str]]) -> None:
        self.path, self.heavy, self.pairs = path, re.compile(heavy, re.M), pairs

    def apply(self, src: str) -> tuple[str, str]:
        """(new source, what happened); raises ValueError if the file is not laid out as expected."""
        if MARKER in src:
            return src, "already deferred"
        if not self.heavy.search(src):
            return src, "nothing to defer"
        missing = [old for old, _ in self.pairs if src.count(old) != 1]
        if missing:
            raise ValueError(f"expected exactly one of each of these, found otherwise: {missing!r}")
        for old, new in self.pairs:
            src = src.replace(old, new, 1)
        if self.heavy.search(src):
            raise ValueError(f"what {self.heavy.pattern!r} matches is still there")
        return MARKER + src, "deferred"


SSL_CONTEXTS = '''\
_SSL_CONTEXTS = {}


def _default_ssl_context(verified):
    """The default client SSL context (verifying or not), made on first use, then kept (lcs)."""
    try:
        return _SSL_CONTEXTS[verified]
    except KeyError:
        return _SSL_CONTEXTS.setdefault(verified, _make_ssl_context(verified))


def __getattr__(name):
    """The two former module-level names, for code that imports them (aiohttp's own tests do) (lcs)."""
    if name in ("_SSL_CONTEXT_VERIFIED", "_SSL_CONTEXT_UNVERIFIED"):
        return _default_ssl_context(name == "_SSL_CONTEXT_VERIFIED")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
'''

GET_SSL_CONTEXT_TAIL = '''\
        if sslcontext is not True:
            # not verified or fingerprinted
            return _SSL_CONTEXT_UNVERIFIED
        sslcontext = self._ssl
        if isinstance(sslcontext, ssl.SSLContext):
            return sslcontext
        if sslcontext is not True:
            # not verified or fingerprinted
            return _SSL_CONTEXT_UNVERIFIED
        return _SSL_CONTEXT_VERIFIED
'''

ALEMBIC = ["import alembic.command\n", "import alembic.config\n", "from alembic.script import ScriptDirectory\n"]

EDITS = [
    Edit(
        "jupyterhub/orm.py",
        r"^(import|from) alembic",
        [
            *((f"\n{line}", "\n") for line in ALEMBIC),
            (
                "\n    from .dbutil import _temp_alembic_ini\n",
                "\n" + "".join("    " + line for line in ALEMBIC) + "    from .dbutil import _temp_alembic_ini\n",
            ),
        ],
    ),
    Edit(
        "jupyterhub/log.py",
        r"^from \.handlers",
        [
            ("\nfrom .handlers.pages import HealthCheckHandler\n", "\n"),
            (
                "\nfrom .metrics import prometheus_log_method\n",
                "\nfrom .metrics import prometheus_log_method\n\n\n" + HEALTH_CHECK.rstrip("\n") + "\n",
            ),
            (
                "isinstance(handler, StaticFileHandler | HealthCheckHandler)",
                "(isinstance(handler, StaticFileHandler) or _lcs_is_health_check(handler))",
            ),
        ],
    ),
    Edit(
        "jupyterhub/metrics.py",
        r"^from \. import orm$",
        [("\nfrom . import orm\n", "\n" + LAZY_MODULE + 'orm = _LcsLazyModule("jupyterhub.orm", "orm")\n')],
    ),
    Edit(
        "jupyterhub/scopes.py",
        r"^import sqlalchemy|^from \. import orm, roles$",
        [
            ("\nimport sqlalchemy as sa\n", "\n"),
            (
                "\nfrom . import orm, roles\n",
                "\n" + LAZY_MODULE + 'sa = _LcsLazyModule("sqlalchemy", "sa")\n'
                'orm = _LcsLazyModule("jupyterhub.orm", "orm")\nroles = _LcsLazyModule("jupyterhub.roles", "roles")\n',
            ),
        ],
    ),
    Edit(
        "jupyterhub/utils.py",
        r"^from sqlalchemy",
        [
            ("\nfrom sqlalchemy.exc import SQLAlchemyError\n", "\n"),
            (
                "\nfrom .httpclient import fetch\n",
                "\nfrom .httpclient import fetch\n\n\n" + SQLALCHEMY_ERROR.rstrip("\n") + "\n",
            ),
            ("        except SQLAlchemyError:\n", "        except _lcs_sqlalchemy_error():\n"),
        ],
    ),
    Edit(
        "aiohttp/connector.py",
        # a line using either name outside a string: the module-level contexts, or a use the edits missed
        r"""^(?!.*["']_SSL_CONTEXT_).*\b_SSL_CONTEXT_(UN)?VERIFIED\b""",
        [
            (
                "\n# The default SSLContext objects are created at import time\n"
                "# since they do blocking I/O to load certificates from disk,\n"
                "# and imports should always be done before the event loop starts\n"
                "# or in a thread.\n"
                "_SSL_CONTEXT_VERIFIED = _make_ssl_context(True)\n_SSL_CONTEXT_UNVERIFIED = _make_ssl_context(False)\n",
                "\n# The default SSLContext objects are made on their first use (an HTTPS request), not at import:\n"
                "# each parses the whole CA bundle, in every process that imports aiohttp (lcs).\n" + SSL_CONTEXTS,
            ),
            (
                GET_SSL_CONTEXT_TAIL,
                GET_SSL_CONTEXT_TAIL.replace("_SSL_CONTEXT_UNVERIFIED", "_default_ssl_context(False)").replace(
                    "_SSL_CONTEXT_VERIFIED", "_default_ssl_context(True)"
                ),
            ),
        ],
    ),
]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not all(Path(argv[1], package).is_dir() for package in ("jupyterhub", "aiohttp")):
        print(f"usage: {argv[0]} SITE_PACKAGES_DIR (the directory holding jupyterhub/ and aiohttp/)", file=sys.stderr)
        return 2
    site = Path(argv[1])
    results = []
    for edit in EDITS:  # every file checked before any is written: all edits or none
        path = site / edit.path
        try:
            src, what = edit.apply(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            print(
                f"jupyter: {path} is not laid out as images/packer/files/lcs_start_edits.py expects ({e}); "
                "update or drop that edit",
                file=sys.stderr,
            )
            return 1
        results.append((edit, path, src, what))
    for edit, path, src, what in results:
        if what == "deferred":
            path.write_text(src, encoding="utf-8")
        py_compile.compile(str(path), doraise=True)
        print(f"jupyter: {edit.path}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
