"""The image's own Python files (``images/packer/files/*.py``): scripts copied into the image, not a package
of this repository, so tests and benchmarks load them by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

IMAGE_FILES = Path(__file__).resolve().parents[1] / "images" / "packer" / "files"


def load_image_file(name: str) -> ModuleType:
    """Import ``images/packer/files/NAME.py`` as the module ``NAME`` (registered in ``sys.modules``: dataclasses
    look their module up there); a second call returns the same module."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, IMAGE_FILES / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {IMAGE_FILES / name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
