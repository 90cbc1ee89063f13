"""The quick start's main job: `invoke demo`.

    invoke demo           image built? dev cloud up? image published? then a JupyterHub with LibcloudSpawner
                          (configured from images/manifest.json) in the background, a server spawned for the
                          demo user and reached through the proxy; prints the URL, the login and the spawn time
    invoke demo --stop    stop that hub (its pid file); the hub deletes the VMs of its servers on the way out

Everything the demo writes is under devcloud/out/demo/ (gitignored): the hub configuration, its database,
cookie secret, log (`jupyterhub.log`), pid file, the demo password and the API token of the task.
Each step calls the task that owns it (`invoke build-image`, `invoke devcloud up`, `invoke publish-image`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from invoke import Exit, task

from testkit.wait import wait_until

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "images" / "manifest.json"
STATE = ROOT / "devcloud" / "out" / "state.json"
DEMO_DIR = ROOT / "devcloud" / "out" / "demo"
PID_FILE = DEMO_DIR / "jupyterhub.pid"
LOG_FILE = DEMO_DIR / "jupyterhub.log"
CONFIG_FILE = DEMO_DIR / "jupyterhub_config.py"
SECRETS_FILE = DEMO_DIR / "secrets.json"
CLOUD = "devcloud"
OS_NAME = "debian-12"
DEMO_USER = "demo"
HUB_START_DEADLINE_S = 90
SPAWN_DEADLINE_S = 900  # guests are emulated on the development machine: 70-120 s is usual
STOP_DEADLINE_S = 330  # the hub deletes its servers' VMs before it exits


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _invoke(c, args: str) -> None:
    """Run another project task in its own invoke process, visibly (it owns its output and exit code)."""
    with c.cd(str(ROOT)):
        r = c.run(f"{_q(sys.executable)} -m invoke {args}", echo=True, pty=sys.stdout.isatty(), warn=True)
    if r.exited != 0:
        raise Exit(f"demo: `invoke {args}` failed (exit {r.exited}); its output above says why", code=r.exited or 1)


def _manifest_images() -> list[dict]:
    try:
        return json.loads(MANIFEST.read_text()).get("images", [])
    except FileNotFoundError:
        return []
    except ValueError as e:
        raise Exit(f"demo: {MANIFEST} is not valid JSON ({e}); fix or remove it") from None


def _built_image() -> dict | None:
    """The newest Debian 12 entry of the manifest whose qcow2 is still on disk."""
    for entry in reversed(_manifest_images()):
        if entry.get("os") == OS_NAME and entry.get("path") and (ROOT / entry["path"]).is_file():
            return entry
    return None


def _published_in_glance(entry: dict) -> bool:
    published = (entry.get("published") or {}).get(CLOUD)
    if not published:
        return False
    import openstack

    try:
        conn = openstack.connect(cloud=CLOUD)
        image = conn.image.find_image(published["image_id"], ignore_missing=True)
    except Exception as e:  # openstacksdk raises many kinds; the dev cloud was just checked healthy
        raise Exit(f"demo: cannot ask Glance about {published['image_id']}: {e}") from None
    return image is not None and image.status == "active"


def _read_pid() -> int | None:
    """The demo hub's pid if it still runs (checked against its command line: pids get reused)."""
    try:
        pid = int(PID_FILE.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if str(CONFIG_FILE).encode() in cmdline else None


def _secrets() -> dict:
    if SECRETS_FILE.exists():
        return json.loads(SECRETS_FILE.read_text())
    values = {"password": secrets.token_urlsafe(12), "api_token": secrets.token_hex(32)}
    SECRETS_FILE.write_text(json.dumps(values) + "\n")
    SECRETS_FILE.chmod(0o600)
    return values


def hub_config(facts: dict, password: str, api_token: str, bind_url: str) -> str:
    """The demo hub's configuration: the original documentation's lines, images from the build manifest."""
    cloud_password = os.environ.get(facts.get("password_env", ""), facts.get("password_default", "secret"))
    params = {
        "arg_user_id": facts["user"],
        "arg_key": cloud_password,
        "ex_force_auth_version": facts["auth_version"],
        "ex_force_auth_url": facts["auth_url"],
        "ex_force_service_region": facts["region"],
        "ex_tenant_name": facts["project"],
        "ex_domain_name": "default",
    }
    hub_url = facts["hub_connect_url"]
    return f"""# JupyterHub of `invoke demo` (devtools/demo.py); `invoke demo --stop` stops it. Not in git.
c = get_config()  # noqa: F821

c.JupyterHub.spawner_class = 'libcloudspawner.spawner.LibcloudSpawner'
c.LibcloudSpawner.libcloudparams = {params!r}
c.LibcloudSpawner.userserver_net = {facts["network"]!r}
c.LibcloudSpawner.cloud_region = {facts["region"]!r}
c.LibcloudSpawner.userserver_sizes = [("2 vCPU, 2 GiB", "j1.small")]
# the images come from the build manifest: those `invoke publish-image --cloud {CLOUD}` recorded
c.LibcloudSpawner.image_manifest = {str(MANIFEST)!r}
c.LibcloudSpawner.image_manifest_cloud = {CLOUD!r}
c.LibcloudSpawner.port = 8000  # the dev cloud's security group opens it to the host
c.LibcloudSpawner.start_timeout = {SPAWN_DEADLINE_S}
c.LibcloudSpawner.http_timeout = 120

# the VMs reach the hub API on the host's address on their network (they have no other route)
c.JupyterHub.hub_bind_url = {hub_url!r}
c.JupyterHub.hub_connect_url = {hub_url!r}
c.JupyterHub.bind_url = {bind_url!r}
c.JupyterHub.db_url = 'sqlite:///{DEMO_DIR / "jupyterhub.sqlite"}'
c.JupyterHub.cookie_secret_file = {str(DEMO_DIR / "cookie_secret")!r}
c.ConfigurableHTTPProxy.pid_file = {str(DEMO_DIR / "proxy.pid")!r}

# a demo login: one user, one generated password (see devcloud/out/demo/secrets.json)
c.JupyterHub.authenticator_class = 'dummy'
c.DummyAuthenticator.password = {password!r}
c.Authenticator.allowed_users = {{{DEMO_USER!r}}}
c.Authenticator.admin_users = {{{DEMO_USER!r}}}

# the task's own API token, to spawn the demo server and check it through the proxy
c.JupyterHub.services = [{{'name': 'demo-task', 'api_token': {api_token!r}}}]
c.JupyterHub.load_roles = [{{'name': 'demo-task', 'services': ['demo-task'],
                             'scopes': ['admin:users', 'admin:servers', 'access:servers']}}]

# the hub does not start on a wrong LibcloudSpawner setting (each problem is printed with its fix)
from libcloudspawner.check import stop_unless_valid  # noqa: E402

stop_unless_valid(c)
"""


def _wait(predicate, deadline_s: float, what: str, interval_s: float = 2.0):
    try:
        return wait_until(predicate, timeout_s=deadline_s, interval_s=interval_s, what=what)
    except TimeoutError:
        raise Exit(f"demo: {what} did not happen within {deadline_s:.0f} s; see {LOG_FILE}") from None


def _start_hub(public_url: str) -> int:
    env = dict(os.environ)
    venv_bin = Path(sys.executable).parent
    env["PATH"] = os.pathsep.join([str(ROOT / "node_modules" / ".bin"), str(venv_bin), env.get("PATH", "")])
    if importlib.util.find_spec("libcloudspawner") is None:  # a source checkout without the wheel installed
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "spawner"), env.get("PYTHONPATH")]))
    jupyterhub = venv_bin / "jupyterhub"
    if not jupyterhub.exists():
        raise Exit(f"demo: {jupyterhub} is missing: run ./bootstrap (it installs the venv)")
    if not (ROOT / "node_modules" / ".bin" / "configurable-http-proxy").exists():
        raise Exit("demo: configurable-http-proxy is missing: run `npm install` in the repository (./bootstrap does)")
    with open(LOG_FILE, "ab") as log:
        process = subprocess.Popen(
            [str(jupyterhub), "-f", str(CONFIG_FILE)],
            cwd=DEMO_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # detached: survives the task and its terminal
        )
    PID_FILE.write_text(f"{process.pid}\n")

    def up():
        if process.poll() is not None:
            raise Exit(f"demo: jupyterhub exited with {process.returncode}; see {LOG_FILE}")
        try:
            return requests.get(f"{public_url}/hub/api/", timeout=3).status_code == 200
        except requests.RequestException:
            return False

    _wait(up, HUB_START_DEADLINE_S, "JupyterHub answering", interval_s=1.0)
    return process.pid


def _spawn(public_url: str, api_token: str) -> float:
    """Spawn the demo user's server; the seconds from the request to a server answering through the proxy."""
    headers = {"Authorization": f"token {api_token}"}
    api = f"{public_url}/hub/api"
    r = requests.post(f"{api}/users/{DEMO_USER}", headers=headers, timeout=30)
    if r.status_code not in (201, 409):
        raise Exit(f"demo: cannot create the hub user {DEMO_USER}: {r.status_code} {r.text[:200]}")
    model = requests.get(f"{api}/users/{DEMO_USER}", headers=headers, timeout=30).json()
    server = (model.get("servers") or {}).get("")
    if server and server.get("ready"):
        print(f"demo: {DEMO_USER}'s server already runs (started {server.get('started')})")
        return 0.0
    started = time.monotonic()
    r = requests.post(f"{api}/users/{DEMO_USER}/server", headers=headers, json={}, timeout=60)
    if r.status_code not in (201, 202):
        raise Exit(f"demo: the spawn was refused: {r.status_code} {r.text[:300]}")
    print(f"demo: spawning a server for {DEMO_USER} (a VM boots; usually 1-3 minutes here)...", flush=True)
    deadline = time.monotonic() + SPAWN_DEADLINE_S
    final: dict = {}
    try:  # the spawner's progress events, as the spawn page shows them
        with requests.get(
            f"{api}/users/{DEMO_USER}/server/progress", headers=headers, stream=True, timeout=(10, 120)
        ) as events:
            for line in events.iter_lines(decode_unicode=True):
                if time.monotonic() > deadline:
                    break
                if not line or not line.startswith("data:"):
                    continue
                final = json.loads(line[5:])
                print(f"demo:   {time.monotonic() - started:5.0f} s  {final.get('message', '')}", flush=True)
                if final.get("ready") or final.get("failed"):
                    break
    except (requests.RequestException, ValueError) as e:
        print(f"demo: lost the progress stream ({e}); polling the hub instead", flush=True)
    if final.get("failed"):
        raise Exit(f"demo: the spawn failed: {final.get('message')}; details in {LOG_FILE}")

    def ready():
        m = requests.get(f"{api}/users/{DEMO_USER}", headers=headers, timeout=30).json()
        s = (m.get("servers") or {}).get("")
        if s is None:
            raise Exit(f"demo: the spawn failed; the reason is in {LOG_FILE}")
        return s.get("ready")

    _wait(ready, max(deadline - time.monotonic(), 5), f"{DEMO_USER}'s server becoming ready", interval_s=3.0)

    def answers():
        try:
            r = requests.get(f"{public_url}/user/{DEMO_USER}/api/status", headers=headers, timeout=10)
        except requests.RequestException:
            return False
        return r.status_code == 200

    _wait(answers, 120, f"{DEMO_USER}'s server answering through the proxy")
    return time.monotonic() - started


def _stop() -> None:
    pid = _read_pid()
    if pid is None:
        print("demo: no demo hub is running (no live pid in devcloud/out/demo/jupyterhub.pid)")
        PID_FILE.unlink(missing_ok=True)
        return
    print(f"demo: stopping the demo hub (pid {pid}); it deletes its servers' VMs first (up to {STOP_DEADLINE_S} s)")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_DEADLINE_S
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(1)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)
        raise Exit(f"demo: the hub (pid {pid}) did not stop within {STOP_DEADLINE_S} s and was killed; "
                   "check `openstack --os-cloud devcloud server list` for leftover VMs")  # fmt: skip
    PID_FILE.unlink(missing_ok=True)
    print("demo: stopped")


@task(
    help={
        "stop": "stop the demo hub started earlier (by its pid file) instead of starting one",
        "bind_url": "where the hub's proxy listens for browsers (default http://127.0.0.1:8000; "
        "use http://0.0.0.0:8000 to open it to the network, the login is then all that protects it)",
        "skip_spawn": "start the hub but do not spawn the demo user's server",
    }
)
def demo(c, stop=False, bind_url="http://127.0.0.1:8000", skip_spawn=False):
    """Quick start: build + publish the image if needed, dev cloud up, JupyterHub + a demo server (--stop)."""
    if stop:
        _stop()
        return
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    DEMO_DIR.chmod(0o700)
    public_url = bind_url.rstrip("/").replace("://0.0.0.0", "://127.0.0.1")
    values = _secrets()

    pid = _read_pid()
    if pid is None:
        if _built_image() is None:
            print(f"demo: no {OS_NAME} image in {MANIFEST.relative_to(ROOT)}: building it (about 15-25 min here)")
            _invoke(c, f"build-image --os {OS_NAME}")
        _invoke(c, "devcloud up")
        entry = _built_image()
        if entry is None:
            raise Exit(f"demo: `invoke build-image` ran but {MANIFEST} still lists no {OS_NAME} image on disk")
        if not _published_in_glance(entry):
            _invoke(c, f"publish-image --cloud {CLOUD} --image {_q(ROOT / entry['path'])}")
        facts = json.loads(STATE.read_text())
        CONFIG_FILE.write_text(hub_config(facts, values["password"], values["api_token"], bind_url))
        CONFIG_FILE.chmod(0o600)
        # the pre-flight: every image, size, network, key pair and security group offered exists in the cloud
        _invoke(c, f"check-config --config {_q(CONFIG_FILE)}")
        pid = _start_hub(public_url)
        print(f"demo: JupyterHub started (pid {pid}), log {LOG_FILE.relative_to(ROOT)}")
    else:
        print(f"demo: the demo hub already runs (pid {pid}); `invoke demo --stop` stops it")

    seconds = None if skip_spawn else _spawn(public_url, values["api_token"])
    print()
    print(f"  JupyterHub:  {public_url}/hub/")
    print(f"  login:       user {DEMO_USER!r}, password {values['password']!r}")
    print("               (JupyterHub's DummyAuthenticator with one generated password, for this demo only;")
    print(f"                kept in {SECRETS_FILE.relative_to(ROOT)})")
    if seconds:
        print(f"  spawn time:  {seconds:.0f} s from the request to {DEMO_USER}'s server answering through the proxy")
    elif seconds == 0.0:
        print(f"  server:      {public_url}/user/{DEMO_USER}/ (already running)")
    print(f"  stop:        invoke demo --stop   (log: {LOG_FILE.relative_to(ROOT)})")


TASKS = [demo]
