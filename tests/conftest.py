"""Shared test set-up: make the repository's packages importable when running from a source tree.

The CI installs the wheel (``./bootstrap``), and then ``libcloudspawner`` comes from site-packages; from a
plain checkout (``PYTHONPATH`` unset) the source tree's ``spawner/`` is used instead.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if importlib.util.find_spec("libcloudspawner") is None:
    sys.path.insert(0, str(REPO / "spawner"))
