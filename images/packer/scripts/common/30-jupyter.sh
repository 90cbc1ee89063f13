#!/bin/sh
# The Jupyter stack: a venv in /opt/jupyter installed offline from the uploaded wheelhouse, checked against
# the hashed lock file; the commands the spawner's unit runs linked into /usr/local/bin.
set -eu

build=${LCS_BUILD_DIR:?}
venv=/opt/jupyter

python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --no-index --find-links "$build/wheelhouse" \
    --require-hashes --only-binary=:all: --no-compile -r "$build/requirements.lock"
# pip byte-compiles one file at a time; compileall uses every CPU. Without .pyc files in this root-owned
# venv every server start would compile in memory again (seconds under emulation).
"$venv/bin/python" -m compileall -q -j 0 "$venv/lib" >/dev/null
"$venv/bin/python" -m pip check

for cmd in jupyterhub-singleuser jupyter-lab jupyter python; do
    ln -sf "$venv/bin/$cmd" "/usr/local/bin/$cmd"
done
"$venv/bin/python" - <<'PY'
from importlib.metadata import version

for dist in ("jupyterhub", "jupyterlab", "numpy", "matplotlib"):
    print(f"jupyter stack: {dist} {version(dist)}")
PY
