"""Shared test set-up.

``libcloudspawner`` comes from the installed wheel (``./bootstrap`` installs it non-editably), never from the
source tree; ``testkit`` and ``tests`` import from the repository root (pytest's ``pythonpath = ["."]``).
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
