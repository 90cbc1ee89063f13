"""The dev cloud: a real single-node OpenStack on this machine, from Debian's own packages.

    invoke devcloud up        install (first time), configure, start, wait until healthy; write
                              ~/.config/openstack/clouds.yaml (entry devcloud) and devcloud/out/
    invoke devcloud status    health of every service; exits 1 naming what is broken
    invoke devcloud down      stop every service and the VMs (packages and data stay)
    invoke devcloud reset     delete the jupyter project's servers and volumes; re-create network and flavors
    invoke devcloud smoke     boot a tiny guest through libcloud, check it, delete it

The work is done by devcloud/devcloud.sh (root, Debian 12); docs/devcloud.md explains it all.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from invoke import Exit, task

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "devcloud" / "devcloud.sh"
SMOKE = ROOT / "devcloud" / "smoke.py"
OUT = ROOT / "devcloud" / "out"
CLOUDS_YAML = Path.home() / ".config" / "openstack" / "clouds.yaml"
#: the clouds.yaml entries `up` writes: the project user the hub uses, and admin for operators
CLOUD_NAME = "devcloud"
ADMIN_CLOUD_NAME = "devcloud-admin"
DEFAULT_IMAGE = "debian-12-jupyter"
MANIFEST = ROOT / "images" / "manifest.json"


# --- helpers -------------------------------------------------------------------------------------------------


def _password(var: str = "DEVCLOUD_JUPYTER_PASSWORD") -> str:
    """The password devcloud.sh uses: DEVCLOUD_JUPYTER_PASSWORD, else DEVCLOUD_PASSWORD, else 'secret'."""
    return os.environ.get(var) or os.environ.get("DEVCLOUD_PASSWORD") or "secret"


def _preflight() -> None:
    """Refuse early, with the fix, what devcloud.sh cannot do."""
    if os.geteuid() != 0:
        raise Exit("invoke devcloud: run it as root (it installs packages and starts daemons): sudo -E invoke ...")
    if not shutil.which("apt-get") or not Path("/etc/debian_version").exists():
        raise Exit("invoke devcloud: needs Debian 12 (bookworm): the cloud is built from Debian's OpenStack packages")
    version = Path("/etc/debian_version").read_text().strip()
    if not version.startswith("12"):
        raise Exit(f"invoke devcloud: needs Debian 12 (bookworm), this is Debian {version}")
    for tool, pkg in (("bash", "bash"), ("ip", "iproute2"), ("setsid", "util-linux")):
        if not shutil.which(tool):
            raise Exit(f"invoke devcloud: {tool} is missing: install it with `apt-get install {pkg}`")
    if not Path("/usr/bin/python3").exists():
        raise Exit("invoke devcloud: /usr/bin/python3 is missing: install it with `apt-get install python3`")


def _script(c, *args: str, hide: bool = False):
    """Run devcloud.sh; visible and streaming unless hidden. Returns the invoke Result (never raises)."""
    cmd = shlex.join([str(SCRIPT), *args])
    if hide:
        return c.run(cmd, hide=True, warn=True, pty=False)
    return c.run(cmd, echo=True, warn=True, pty=sys.stdout.isatty())


def _facts(c) -> dict:
    r = _script(c, "facts", hide=True)
    if r.exited != 0:
        raise Exit(f"invoke devcloud: could not read the cloud's facts:\n{r.stderr.strip()}", code=1)
    return json.loads(r.stdout)


def published_image(cloud: str = CLOUD_NAME, manifest: Path = MANIFEST) -> str | None:
    """The Glance name of the newest image `invoke publish-image --cloud devcloud` recorded, if any."""
    try:
        images = json.loads(manifest.read_text()).get("images", [])
    except (OSError, ValueError):
        return None
    published = [e["published"][cloud] for e in images if cloud in (e.get("published") or {})]
    published.sort(key=lambda p: p.get("date", ""))
    return published[-1].get("image_name") if published else None


def _clouds_yaml_entries(password: str, admin_password: str) -> dict:
    common = {"region_name": "RegionOne", "identity_api_version": 3, "interface": "public"}
    auth = {"auth_url": "http://127.0.0.1:5000/v3", "user_domain_name": "Default", "project_domain_name": "Default"}
    return {
        CLOUD_NAME: {
            "auth": {**auth, "username": "jupyter", "password": password, "project_name": "jupyter"},
            **common,
        },
        ADMIN_CLOUD_NAME: {
            "auth": {**auth, "username": "admin", "password": admin_password, "project_name": "admin"},
            **common,
        },
    }


def write_clouds_yaml(path: Path, entries: dict) -> None:
    """Merge `entries` into the clouds.yaml at `path`; other entries and top-level keys stay as they were."""
    import yaml

    data = {}
    if path.exists():
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise Exit(f"invoke devcloud: {path} is not a YAML mapping: fix or move it, then run again")
    clouds = data.get("clouds") or {}
    clouds.update(entries)
    data["clouds"] = clouds
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.chmod(0o600)  # it holds passwords
    tmp.replace(path)


def hub_config(password: str, image: str) -> str:
    """An example jupyterhub_config.py: the original documentation's lines, plus where VMs reach the hub.

    The images offered: those the build manifest records as published to the dev cloud when it exists (the
    names `invoke publish-image` gives carry a date and a commit), else ``image``."""
    params = {
        "arg_user_id": "jupyter",
        "arg_key": password,
        "ex_force_auth_version": "3.x_password",
        "ex_force_auth_url": "http://127.0.0.1:5000",
        "ex_force_service_region": "RegionOne",
        "ex_tenant_name": "jupyter",
        "ex_domain_name": "default",
    }
    params_src = "{\n" + "".join(f"    {json.dumps(k)}: {json.dumps(v)},\n" for k, v in params.items()) + "}"
    if MANIFEST.is_file():
        images_src = (
            "c.LibcloudSpawner.userserver_images = []\n"
            f"c.LibcloudSpawner.image_manifest = {json.dumps(str(MANIFEST))}\n"
            f"c.LibcloudSpawner.image_manifest_cloud = {json.dumps(CLOUD_NAME)}"
        )
    else:
        images_src = f'c.LibcloudSpawner.userserver_images = [("Debian 12 Jupyter", {json.dumps(image)})]'

    return f"""\
# JupyterHub configuration for the dev cloud, written by `invoke devcloud up` (devcloud/out/ is not in git).
# The LibcloudSpawner lines are the original documentation's; the images come from the build manifest
# when one exists (`libcloudspawner-check --config devcloud/out/jupyterhub_config.py` checks them all).
c = get_config()  # noqa: F821

c.JupyterHub.spawner_class = 'libcloudspawner.spawner.LibcloudSpawner'
c.LibcloudSpawner.libcloudparams = {params_src}
c.LibcloudSpawner.userserver_net = "flatnet"
# the guest ports open to this host (the hub and its proxy) only: one user's VM cannot reach another's
c.LibcloudSpawner.security_groups = ["jupyter-server"]
c.LibcloudSpawner.cloud_region = "RegionOne"
c.LibcloudSpawner.userserver_sizes = [("2 vCPU, 2 GiB", "j1.small")]
{images_src}

# The VMs are on 10.99.0.0/24 with no route anywhere else: they reach the hub API on the host's
# address on that network. The hub listens there (the proxy on this machine reaches it there too).
c.JupyterHub.hub_bind_url = "http://10.99.0.1:8081"
c.JupyterHub.hub_connect_url = "http://10.99.0.1:8081"
"""


def write_outputs(facts: dict, image: str) -> None:
    """clouds.yaml entries, devcloud/out/state.json and devcloud/out/jupyterhub_config.py."""
    password, admin_password = _password(), _password("DEVCLOUD_PASSWORD")
    write_clouds_yaml(CLOUDS_YAML, _clouds_yaml_entries(password, admin_password))
    OUT.mkdir(parents=True, exist_ok=True)
    state = {
        **facts,
        "clouds_yaml": str(CLOUDS_YAML),
        "cloud": CLOUD_NAME,
        "admin_cloud": ADMIN_CLOUD_NAME,
        "password_default": "secret",
        "hub_config": str(OUT / "jupyterhub_config.py"),
        "example_image": image,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (OUT / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    cfg = OUT / "jupyterhub_config.py"
    cfg.write_text(hub_config(password, image))
    cfg.chmod(0o600)  # holds the password
    print(f"devcloud: wrote {CLOUDS_YAML} (entries {CLOUD_NAME}, {ADMIN_CLOUD_NAME}), {OUT}/state.json, {cfg}")


# --- actions -------------------------------------------------------------------------------------------------


def _up(c, image: str, reconfigure: bool) -> None:
    t0 = time.monotonic()
    r = _script(c, "configure" if reconfigure else "up")
    if r.exited != 0:
        raise Exit(
            "invoke devcloud up failed (output above; log /var/tmp/devcloud/devcloud.log). "
            "`invoke devcloud status` names the broken service.",
            code=r.exited,
        )
    write_outputs(_facts(c), image)
    print(f"devcloud: up in {time.monotonic() - t0:.0f}s")


def _down(c) -> None:
    r = _script(c, "down")
    if r.exited != 0:
        raise Exit("invoke devcloud down failed (output above)", code=r.exited)


def _status(c) -> None:
    r = c.run(shlex.join([str(SCRIPT), "status"]), warn=True, pty=False)
    if r.exited != 0:
        broken = [line for line in r.stdout.splitlines() if line.startswith("devcloud: BROKEN:")]
        what = broken[0].removeprefix("devcloud: BROKEN:").strip() if broken else "see above"
        raise Exit(f"devcloud is not healthy: {what} (fix: invoke devcloud up)", code=1)


def _reset(c) -> None:
    r = _script(c, "reset")
    if r.exited != 0:
        raise Exit("invoke devcloud reset failed (output above)", code=r.exited)
    # the network has a new id: refresh the facts file (same example image as before)
    image = DEFAULT_IMAGE
    if (OUT / "state.json").exists():
        image = json.loads((OUT / "state.json").read_text()).get("example_image", DEFAULT_IMAGE)
    write_outputs(_facts(c), image)


def _smoke(c, image: str, flavor: str) -> None:
    try:
        import libcloud  # noqa: F401
    except ImportError:
        raise Exit("apache-libcloud is missing here: run invoke from the venv (./bootstrap installs it)") from None
    if image == "testvm":
        r = _script(c, "test-guest")
        if r.exited != 0:
            raise Exit("could not build or upload the test guest (output above)", code=r.exited)
    port = "8000" if image == "testvm" else "0"
    cmd = shlex.join([sys.executable, str(SMOKE), "--image", image, "--flavor", flavor, "--http-port", port])
    r = c.run(cmd, echo=True, warn=True, pty=False)
    if r.exited != 0:
        raise Exit("devcloud smoke test failed (output above)", code=r.exited)


ACTIONS = ("up", "down", "status", "reset", "smoke")


@task(
    positional=["action"],
    help={
        "action": "up | down | status | reset | smoke (see the task's docstring)",
        "image": "up: image name for the example hub config in devcloud/out/ (default: the newest one "
        f"images/manifest.json says was published to devcloud, else {DEFAULT_IMAGE}); "
        "smoke: the Glance image to boot (default testvm, built on demand)",
        "reconfigure": "up: re-write every configuration and re-sync the databases even if nothing changed",
        "flavor": "smoke: flavor name (default m1.tiny, fits testvm and blank)",
    },
)
def devcloud(c, action, image="", reconfigure=False, flavor="m1.tiny"):
    """Dev cloud, a single-node OpenStack here: invoke devcloud up | down | status | reset | smoke.

    up      install (first time), configure, start, wait until healthy; write clouds.yaml (entries
            devcloud, devcloud-admin), devcloud/out/state.json and devcloud/out/jupyterhub_config.py.
            Idempotent: on a healthy cloud it only checks and re-writes the outputs.
    down    stop every service (Ceph too) and power off the VMs (packages, data and configuration stay)
    status  health of every service, Ceph's and Cinder's too; exits 1 naming what is broken, with the fix
    reset   delete every server and volume of the jupyter project; re-create network flatnet and the flavors
    smoke   boot a tiny guest through libcloud (the documented driver arguments), check it, delete it

    Passwords: DEVCLOUD_PASSWORD (services, admin; default secret), DEVCLOUD_JUPYTER_PASSWORD (user jupyter,
    default DEVCLOUD_PASSWORD). Runs as root on Debian 12; docs/devcloud.md has the details.
    """
    if action not in ACTIONS:
        raise Exit(f"invoke devcloud: unknown action {action!r}: choose one of {', '.join(ACTIONS)}")
    _preflight()
    if action == "up":
        _up(c, image or published_image() or DEFAULT_IMAGE, reconfigure)
    elif action == "down":
        _down(c)
    elif action == "status":
        _status(c)
    elif action == "reset":
        _reset(c)
    else:
        _smoke(c, image or "testvm", flavor)


TASKS = [devcloud]
