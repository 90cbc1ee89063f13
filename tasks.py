"""Developer and operator tasks for jupyter-libcloudspawner (run `invoke --list`).

The tasks live in `devtools/` by topic; this file only gathers them into one flat namespace, so that
`invoke build-image`, `invoke devcloud up` and `invoke test` read the way the README says.
"""

from __future__ import annotations

import importlib

from invoke import Collection

# One module per topic; each exposes `TASKS`, the invoke tasks it contributes.
_MODULES = ["devtools.testing", "devtools.images", "devtools.devcloud", "devtools.demo", "devtools.ops"]

ns = Collection()
for _name in _MODULES:
    for _task in importlib.import_module(_name).TASKS:
        ns.add_task(_task)
