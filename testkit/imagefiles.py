"""The image's own Python files (``images/packer/files/*.py``): scripts copied into the image, not a package
of this repository, so tests and benchmarks load them by path."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

IMAGE_FILES = Path(__file__).resolve().parents[1] / "images" / "packer" / "files"


def load_image_file(name: str) -> ModuleType:
    """Import ``images/packer/files/NAME.py`` as a module named ``NAME`` (not added to ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(name, IMAGE_FILES / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {IMAGE_FILES / name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
