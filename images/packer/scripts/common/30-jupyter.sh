#!/bin/sh
# The Jupyter stack: a venv in /opt/jupyter installed offline from the uploaded wheelhouse, every wheel checked
# against the hashed lock file; the commands the spawner's unit runs linked into /usr/local/bin.
# Idempotent: a venv already installed and byte-compiled from this very lock (stamp) is only re-checked; that
# is how `invoke build-image` can run this script first in a chroot at host speed (--prebake).
set -eu

build=${LCS_BUILD_DIR:?}
venv=/opt/jupyter
stamp=$venv/.lcs-lock-sha256
lock_sum=$(sha256sum "$build/requirements.lock" | cut -d' ' -f1)

install_stack() {
    # uv (build-only, from the wheelhouse, its hash checked against build-tools.lock) installs natively:
    # under software emulation it is several times faster than pip, every step of which is emulated Python.
    uv=""
    for whl in "$build"/wheelhouse/uv-*.whl; do
        [ -f "$whl" ] || continue
        sum=$(sha256sum "$whl" | cut -d' ' -f1)
        grep -q "sha256:$sum" "$build/build-tools.lock" || { echo "jupyter: $whl not in build-tools.lock" >&2; exit 1; }
        python3 -m zipfile -e "$whl" "$build/tools"
        uv=$(find "$build/tools" -path '*.data/scripts/uv' -type f)
        chmod 0755 "$uv"
    done
    [ -n "$uv" ] || { echo "jupyter: no uv wheel in the wheelhouse" >&2; exit 1; }

    rm -f "$stamp"
    python3 -m venv --without-pip "$venv"
    site=$(site_of)
    UV_NO_CACHE=1 UV_PYTHON_DOWNLOADS=never "$uv" pip install --python "$venv/bin/python" --offline --no-index \
        --find-links "$build/wheelhouse" --require-hashes --only-binary :all: --link-mode copy --quiet --no-deps \
        -r "$build/requirements.lock"

    # Byte-compile what a server start imports, so that start is fast: users cannot write .pyc files into
    # this root-owned venv; compiling everything (tests, unused modules) takes many minutes under emulation.
    env -u PYTHONDONTWRITEBYTECODE MPLCONFIGDIR="$build/mpl" "$venv/bin/python" -c '
import importlib
for m in ["jupyterhub.singleuser", "jupyter_server.serverapp", "jupyterlab.labapp", "jupyter_lsp",
          "notebook_shim", "jupyter_server_terminals", "ipykernel.kernelapp", "ipykernel.ipkernel",
          "numpy", "matplotlib.pyplot"]:
    importlib.import_module(m)
'
    # ... and what a server imports only while it starts (its request handlers; the HTTP client of JupyterLab's
    # extension manager): measured in a chroot of the image, 62 modules were compiled again at every start.
    env -u PYTHONDONTWRITEBYTECODE "$venv/bin/python" -m compileall -q -x '/tests?/' \
        "$site/jupyter_server" "$site/tornado" "$site/httpcore" "$site/h11" "$site/httpx" "$site/jupyter_lsp" \
        "$site/notebook_shim" "$site/jupyter_core" "$site/jinja2" >/dev/null
    echo "$lock_sum" > "$stamp"
}

site_of() { "$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_sum" ] && [ -x "$venv/bin/python" ]; then
    echo "jupyter: $venv already installed from this lock; checking it"
else
    install_stack
fi

# The installed distributions must be exactly the locked ones (names and versions).
"$venv/bin/python" -I - "$build/requirements.lock" <<'PY'
import re
import sys
from importlib.metadata import distributions

norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
locked = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", open(sys.argv[1]).read(), flags=re.M))
locked = {norm(k): v for k, v in locked.items()}
installed = {norm(d.metadata["Name"]): d.version for d in distributions()}
wrong = {k: (v, installed.get(k)) for k, v in locked.items() if installed.get(k) != v}
if wrong:
    sys.exit(f"jupyter: installed versions differ from the lock: {wrong}")
for d in ("jupyterhub", "jupyterlab", "numpy", "matplotlib"):
    print(f"jupyter stack: {d} {installed[d]}")
PY

# Three cuts in what every server start runs, measured by instruction counts (callgrind; docs/images.md):
# 1. The patch set (patches/<dist>-<version>/*.patch, applied by files/lcs_patches.py): a single-user server
#    imports JupyterHub's ORM, SQLAlchemy, Alembic and the hub's handlers, but never opens a database, and
#    aiohttp builds two TLS contexts at import (each parses the whole CA bundle) for a client that talks plain
#    HTTP to the hub: five patches to JupyterHub and one to aiohttp defer both. The step refuses an installed
#    version that has no patch directory, applies all or nothing, is idempotent, rewrites the RECORD entries
#    of the files it edits, checks the effect in a fresh interpreter, then runs pip check.
"$venv/bin/python" -I "$build/lcs_patches.py" --pip-check "$build/patches" "$(site_of)"
# 2. jupyter-lsp's server extension looks for language servers at every start; the image has none (users cannot
#    install into the root-owned venv), and JupyterLab's LSP features are off by default: -4.5%. Disabled in
#    the venv's configuration; `jupyter server extension enable --sys-prefix jupyter_lsp` brings it back.
# (its chatter is kept quiet, and shown if it fails)
if ! out=$("$venv/bin/jupyter" server extension disable --sys-prefix jupyter_lsp 2>&1); then
    printf '%s\n' "$out" >&2
    echo "jupyter: could not disable jupyter_lsp (its output above)" >&2
    exit 1
fi
# 3. JupyterLab's extension manager: the default one (PyPI) builds an HTTP client for pypi.org at every start
#    (-8%), yet could install nothing here (pip cannot write to the root-owned venv). The read-only manager
#    still lists the installed extensions. Written to the venv's jupyter_server_config.json, not to the .d
#    directory beside it: Jupyter Server reads that directory for jpserver_extensions only. An administrator who
#    makes the venv writable sets "pypi" back in that file or with the spawner's args
#    (--LabApp.extension_manager=pypi).
mkdir -p "$venv/etc/jupyter"
printf '{"LabApp": {"extension_manager": "readonly"}}\n' > "$venv/etc/jupyter/jupyter_server_config.json"

# The start-up helper (files/lcs_startup.py): jupyterhub-singleuser with the cyclic GC paused until the server
# serves (about 15% of a start's CPU), resumed by the helper's Jupyter Server extension.
site=$(site_of)
install -m 0644 "$build/lcs_startup.py" "$site/lcs_startup.py"
env -u PYTHONDONTWRITEBYTECODE "$venv/bin/python" -m py_compile "$site/lcs_startup.py"
mkdir -p "$venv/etc/jupyter/jupyter_server_config.d"
printf '{"ServerApp": {"jpserver_extensions": {"lcs_startup": true}}}\n' \
    > "$venv/etc/jupyter/jupyter_server_config.d/lcs_startup.json"
rm -f /usr/local/bin/jupyterhub-singleuser
cat > /usr/local/bin/jupyterhub-singleuser <<EOF
#!$venv/bin/python
# jupyterhub-singleuser, with the cyclic GC paused during start-up (lcs_startup.py)
import sys
from lcs_startup import main
sys.exit(main())
EOF
chmod 0755 /usr/local/bin/jupyterhub-singleuser

for cmd in jupyter-lab jupyter pip; do
    ln -sf "$venv/bin/$cmd" "/usr/local/bin/$cmd"
done
# Not a symlink for python: Python finds its venv (pyvenv.cfg) next to the path it was started as, so a
# symlinked /usr/local/bin/python would be the system Python without the stack.
rm -f /usr/local/bin/python
printf '#!/bin/sh\nexec %s/bin/python "$@"\n' "$venv" > /usr/local/bin/python
chmod 0755 /usr/local/bin/python
