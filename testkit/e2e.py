"""End-to-end tier helpers: the dev cloud's facts, Nova as the judge, a kernel run through the proxy.

The hub itself is the hub tier's :class:`testkit.hub.Hub` (a real ``jupyterhub`` + its real
``configurable-http-proxy``), configured here for the real cloud instead of the OpenStack double.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from testkit.wait import wait_until

REPO = Path(__file__).resolve().parents[1]
STATE_PATH = REPO / "devcloud" / "out" / "state.json"
MANIFEST_PATH = REPO / "images" / "manifest.json"
ARTIFACTS = REPO / "artifacts" / "e2e"
CLOUD = "devcloud"

FIX_UP = "run `invoke devcloud up` (as root; `invoke devcloud status` names what is broken)"
FIX_PUBLISH = (
    "run `invoke publish-image --cloud devcloud` (after `invoke build-image --os debian-12` if no image is built)"
)

TAG_HUB_ID = "jupyterhub-hub-id"
TAG_USER = "jupyterhub-user"
TAG_SERVER = "jupyterhub-server-name"


# emulated guests answer slowly: the end-to-end waits poll at this pace
GUEST_POLL_S = 2.0


# ---------------------------------------------------------------------------------------------- the dev cloud
def devcloud_facts() -> dict[str, Any]:
    """``devcloud/out/state.json``, or a failure naming the command that writes it."""
    if not STATE_PATH.is_file():
        pytest.fail(f"the dev cloud's facts ({STATE_PATH}) are missing: {FIX_UP}", pytrace=False)
    facts = json.loads(STATE_PATH.read_text())
    facts["password"] = os.environ.get(facts.get("password_env", ""), facts.get("password_default", "secret"))
    return facts


def connect_nova(facts: dict[str, Any]):
    """An openstacksdk connection with the ``devcloud`` clouds.yaml entry; fails clearly if the cloud is down."""
    import openstack

    try:
        conn = openstack.connect(cloud=facts.get("cloud", CLOUD))
        conn.authorize()
        conn.compute.get("/")  # Nova answers
    except Exception as e:  # openstacksdk raises many kinds (config, keystone, connection)
        pytest.fail(f"the dev cloud does not answer ({type(e).__name__}: {e}): {FIX_UP}", pytrace=False)
    return conn


def published_image(conn) -> dict[str, Any]:
    """The newest manifest entry published to the dev cloud, checked active in Glance."""
    if not MANIFEST_PATH.is_file():
        pytest.fail(f"no image manifest ({MANIFEST_PATH}): {FIX_PUBLISH}", pytrace=False)
    data = json.loads(MANIFEST_PATH.read_text())
    entries = [e for e in data.get("images", []) if (e.get("published") or {}).get(CLOUD)]
    if not entries:
        pytest.fail(f"no image of {MANIFEST_PATH} is published to {CLOUD}: {FIX_PUBLISH}", pytrace=False)
    entry = entries[-1]
    published = entry["published"][CLOUD]
    image = conn.image.find_image(published["image_id"])
    if image is None or image.status != "active":
        state = "missing" if image is None else image.status
        pytest.fail(
            f"image {published['image_id']} ({entry['name']}) is {state} in Glance: {FIX_PUBLISH}", pytrace=False
        )
    return {
        "name": entry["name"],
        "display_name": entry.get("display_name") or entry["name"],
        "image_id": published["image_id"],
        "image_name": published.get("image_name") or entry["name"],
        "versions": entry.get("versions", {}),
    }


def hub_bind_port(host_ip: str) -> int:
    """A free port on the dev cloud's host address (where the VMs reach the hub API)."""
    with socket.socket() as s:
        try:
            s.bind((host_ip, 0))
        except OSError as e:
            pytest.fail(f"cannot listen on {host_ip} (the dev cloud's host address): {e}; {FIX_UP}", pytrace=False)
        return s.getsockname()[1]


def new_hub_id() -> str:
    return "e2e-" + uuid.uuid4().hex[:8]


def servers_of(conn, hub_id: str, user: str | None = None, server: str | None = None) -> list:
    """Servers of the jupyter project carrying this hub's tags (and the user's / server name's)."""
    found = []
    for s in conn.compute.servers(details=True):
        md = s.metadata or {}
        if md.get(TAG_HUB_ID) != hub_id:
            continue
        if user is not None and md.get(TAG_USER) != user:
            continue
        if server is not None and md.get(TAG_SERVER, "") != server:
            continue
        found.append(s)
    return found


def wait_no_server(conn, hub_id: str, user: str, server: str | None = None, timeout_s: float = 180) -> None:
    """Nova lists no server (not even a deleting one) for this user: the VM is really gone. On failure, says
    what Nova and nova-compute say about the servers still listed."""
    try:
        wait_until(
            lambda: not servers_of(conn, hub_id, user, server),
            timeout_s=timeout_s,
            interval_s=GUEST_POLL_S,
            what=f"Nova to list no server of {user}/{server or ''}",
        )
    except TimeoutError as e:
        raise AssertionError(f"{e}\n{nova_view(conn, servers_of(conn, hub_id, user, server))}") from None


NOVA_COMPUTE_LOG = Path("/var/log/nova/nova-compute.log")


def nova_view(conn, servers: list, log_lines: int = 12) -> str:
    """For failure messages: each server's states and fault as Nova shows them, and the dev cloud's
    nova-compute log lines about it (this tier runs on the dev cloud's host). Never raises."""
    out = []
    for s in servers:
        out.append(
            f"--- {s.name} {s.id}: status={s.status} vm_state={s.vm_state} task_state={s.task_state}"
            f" fault={(s.fault or {}).get('message')!r}"
        )
        try:
            lines = [ln for ln in NOVA_COMPUTE_LOG.read_text(errors="replace").splitlines() if s.id in ln]
            out.extend(ln[:300] for ln in lines[-log_lines:])
        except OSError as err:
            out.append(f"(nova-compute log unavailable: {err})")
    return "\n".join(out) or "(no server listed any more)"


def devcloud_service(action: str, name: str) -> None:
    """Stop or start one dev cloud service (fault injection on the real cloud): ``devcloud.sh stop nova-api``."""
    assert action in ("stop", "start"), action
    r = subprocess.run(
        [str(REPO / "devcloud" / "devcloud.sh"), action, name], capture_output=True, text=True, timeout=300
    )
    output = r.stdout[-2000:] + r.stderr[-2000:]
    assert r.returncode == 0, f"devcloud.sh {action} {name} failed ({r.returncode}):\n{output}"


def vm_journal(hub, user: str, server: str = "", lines: int = 60) -> str:
    """What a user's VM says about its single-user server (over SSH as the image's default user, with the
    run's keypair): for failure messages. Never raises."""
    model = hub.spawner_model(user, server) or {}
    address = (model.get("state") or {}).get("address")
    if not address:
        return f"(no address for {user}/{server} in the hub's state: {model})"
    command = (
        f"sudo journalctl -b -u jupyterhub-singleuser --no-pager -o short-monotonic | tail -n {lines};"
        " ps -eo pid,user,etime,pcpu,rss,args | grep -i '[k]ernel\\|[j]upyter'; uptime; free -m"
    )
    try:
        r = subprocess.run(
            ["ssh", "-i", str(hub.ssh_key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "ConnectTimeout=20", "-o", "BatchMode=yes", f"debian@{address}", command],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        return f"--- {user}/{server} at {address}:\n{r.stdout}{r.stderr[-500:]}"
    except Exception as e:
        return f"(journal of {address} unavailable: {e!r})"


def nova_answers(conn) -> bool:
    try:
        conn.compute.get("/servers?limit=1").raise_for_status()  # nova-api itself, not a cached catalogue
        return True
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------- spawns
def form_options(hub, user: str) -> dict[str, dict[str, str]]:
    """The spawn form as ``user`` sees it: each <select>'s options, value -> label."""
    session = hub.login(user)
    page = session.get(f"{hub.url}/hub/spawn", timeout=30)
    assert page.status_code == 200, page.text[:300]
    html = page.content.decode("utf-8")  # requests would guess latin-1 if the charset were missing
    selects = {}
    for name, body in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', html, re.S):
        selects[name] = dict(re.findall(r'<option value="([^"]+)"[^>]*>\s*([^<]*?)\s*</option>', body))
    return selects


class Spawn:
    """A spawn started through the REST API, its progress stream read in a thread from the start."""

    def __init__(
        self, hub, user: str, server: str = "", options: dict[str, Any] | None = None, deadline_s: float = 1500
    ):
        self.hub, self.user, self.server, self.options = hub, user, server, options or {}
        self.deadline_s = deadline_s  # the progress stream is read until then (keep >= the spawn deadline)
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.started = self.ready_at = None
        self._thread = threading.Thread(target=self._watch, name=f"progress-{user}-{server}", daemon=True)

    def start(self) -> Spawn:
        self.hub.create_user(self.user)
        self.started = time.monotonic()
        r = self.hub.api("POST", self.hub.server_url(self.user, self.server), json=self.options)
        assert r.status_code in (201, 202), f"spawn of {self.user}/{self.server} refused: {r.status_code} {r.text}"
        self._thread.start()
        return self

    def _watch(self) -> None:
        try:
            self.events = self.hub.progress(self.user, self.server, timeout_s=self.deadline_s)
            if self.events and self.events[-1].get("ready"):
                self.ready_at = time.monotonic()
        except BaseException as e:  # reported by wait()
            self.error = e

    def wait(self, timeout_s: float = 1500) -> dict[str, Any]:
        """Until the progress stream ends; then the hub's model of the ready server."""
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"{self.user}/{self.server} still spawning after {timeout_s}s"
        if self.error:
            raise AssertionError(f"progress of {self.user}/{self.server} failed: {self.error}")
        last = self.events[-1] if self.events else {}
        assert last.get("ready"), f"spawn of {self.user}/{self.server} failed: {last}\n{self.hub.log_tail(40)}"
        model = self.hub.spawner_model(self.user, self.server)
        assert model and model.get("ready"), f"{self.user}/{self.server} not ready in the hub: {model}"
        return model

    @property
    def seconds(self) -> float:
        return self.ready_at - self.started


# ---------------------------------------------------------------------------------------------- kernels
def run_in_kernel(hub, user: str, code: str, server: str = "", timeout_s: float = 300) -> dict[str, Any]:
    """Start a kernel through the hub's proxy, run ``code`` on its websocket, delete the kernel.

    Returns ``{"status": ..., "stdout": ..., "error": ...}``. The websocket runs in a thread with a hard
    deadline: a socket read that never returns must fail the test, not hang it.
    """
    import websocket

    prefix = f"/user/{user}/{server + '/' if server else ''}"
    headers = {"Authorization": f"token {hub.token}"}
    r = requests.post(f"{hub.url}{prefix}api/kernels", json={"name": "python3"}, headers=headers, timeout=120)
    assert r.status_code == 201, f"kernel start through the proxy: {r.status_code} {r.text[:300]}"
    kernel_id = r.json()["id"]
    ws_url = hub.url.replace("http://", "ws://") + f"{prefix}api/kernels/{kernel_id}/channels"
    result: dict[str, Any] = {"status": None, "stdout": "", "error": ""}
    holder: dict[str, Any] = {}

    def talk() -> None:
        msg_id = uuid.uuid4().hex
        # the server completes the handshake only once the kernel answers kernel_info: slow on emulated
        # guests (23-28 s quiet, more under load), so the handshake gets the whole budget; reads then 30 s
        ws = websocket.create_connection(ws_url, header=[f"Authorization: token {hub.token}"], timeout=timeout_s)
        ws.settimeout(30)
        holder["ws"] = ws
        ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "username": user,
                        "session": uuid.uuid4().hex,
                        "msg_type": "execute_request",
                        "version": "5.3",
                        "date": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {"code": code, "silent": False, "store_history": False, "allow_stdin": False},
                    "channel": "shell",
                    "buffers": [],
                }
            )
        )
        while True:
            try:
                msg = json.loads(ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            holder["seen"] = holder.get("seen", 0) + 1
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg.get("msg_type") or msg["header"]["msg_type"]
            if kind == "stream":
                result["stdout"] += msg["content"].get("text", "")
            elif kind == "error":
                result["error"] = "\n".join(msg["content"].get("traceback", [])) or msg["content"].get("evalue", "")
            elif kind == "execute_reply":
                result["status"] = msg["content"]["status"]
                return

    def guarded() -> None:
        try:
            talk()
        except BaseException as e:  # reported below
            holder["error"] = e

    thread = threading.Thread(target=guarded, name=f"kernel-{user}", daemon=True)
    thread.start()
    try:
        thread.join(timeout_s)
        if thread.is_alive() or "error" in holder:
            state = requests.get(f"{hub.url}{prefix}api/kernels/{kernel_id}", headers=headers, timeout=60)
            raise AssertionError(
                f"no execute_reply within {timeout_s}s ({holder.get('error')!r}; {holder.get('seen', 0)} other"
                f" messages; kernel: {state.status_code} {state.text[:300]}); got so far: {result}"
            )
        return result
    finally:
        ws = holder.get("ws")
        if ws is not None:
            ws.shutdown()  # unblocks a read still waiting in the thread
        requests.delete(f"{hub.url}{prefix}api/kernels/{kernel_id}", headers=headers, timeout=60)
