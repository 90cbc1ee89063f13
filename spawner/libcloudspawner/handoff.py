"""Hand a user's account and environment to a running pool VM, over a channel the hub set up at the VM's boot.

Trust is the hub's own, never the network's: for every pool VM the hub generates two key pairs and two
self-signed certificates. The VM's certificate and key and the hub's client certificate go into the VM's
user-data (``cloudinit/pool.yaml.j2``); the hub keeps its client key (``0600``) and the VM's certificate in
a directory of its own beside its database. The VM's agent (``cloudinit/pool_agent.py``) accepts only that
client certificate; the hub accepts only that VM certificate. The hand-over is one ``POST /claim`` over that
mutual TLS: the account name, the environment file (the user's API token included) and the server unit,
the same files a cold boot's user-data carries. No token is ever in a pool VM's user-data or metadata.

Nothing here logs what it sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from . import userdata

AGENT_DIR = "/etc/libcloudspawner-pool"
AGENT_PATH = "/usr/local/lib/libcloudspawner-pool/pool_agent.py"
AGENT_UNIT_NAME = "lcs-pool-agent.service"
AGENT_UNIT_PATH = f"/etc/systemd/system/{AGENT_UNIT_NAME}"
POOL_TEMPLATE = "pool.yaml.j2"
AGENT_SOURCE = "pool_agent.py"
CERT_DAYS = 365
#: pause between two attempts to reach an agent that does not answer yet (booting)
RETRY_SECONDS = 1.0


class HandoffError(Exception):
    """The VM did not take the user: unreachable, refused, or not the VM the hub booted."""


@dataclass(frozen=True)
class BootMaterial:
    """What one pool VM's user-data carries (the VM's key only lives here and in the VM)."""

    server_cert: str
    server_key: str = ""
    hub_cert: str = ""

    def __repr__(self) -> str:  # never print a key
        return "BootMaterial(...)"


def _self_signed(common_name: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def _write_private(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), mode)
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def make_material(directory: Path, member: str) -> BootMaterial:
    """Generate the pair of identities of pool VM ``member``; keep the hub's side in ``directory`` (``0700``,
    key ``0600``) and return what the VM's user-data carries. Blocking (key generation, fsync): call it off
    the event loop."""
    server_cert, server_key = _self_signed(f"lcs-pool-vm-{member}")
    hub_cert, hub_key = _self_signed(f"lcs-pool-hub-{member}")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    _write_private(directory / "hub.key", hub_key, 0o600)
    _write_private(directory / "hub.pem", hub_cert, 0o600)
    _write_private(directory / "vm.pem", server_cert, 0o600)
    return BootMaterial(server_cert=server_cert, server_key=server_key, hub_cert=hub_cert)


def forget_material(directory: Path) -> None:
    """Remove a pool VM's keys (its VM was claimed or deleted)."""
    shutil.rmtree(directory, ignore_errors=True)


def agent_unit() -> str:
    return (
        "[Unit]\n"
        "Description=jupyter-libcloudspawner pool agent (waits for the hub to hand this VM a user)\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart=/usr/bin/python3 {AGENT_PATH} {AGENT_DIR}/agent.json --bind 0.0.0.0\n"
        "Restart=on-failure\n"
        "RestartSec=2\n"
    )


def render_pool_userdata(material: BootMaterial, *, port: int, default_user: bool) -> str:
    """The pool VM's cloud-config (no user, no token)."""
    config = {"port": port, "root": "../..", "server_cert": "server.pem", "server_key": "server.key",
              "hub_cert": "hub.pem"}  # fmt: skip
    source = userdata.load_template(None, name=POOL_TEMPLATE)
    rendered = (
        userdata.environment()
        .from_string(source)
        .render(
            agent_source=userdata.load_template(None, name=AGENT_SOURCE),
            agent_config=json.dumps(config, indent=1) + "\n",
            server_cert=material.server_cert,
            server_key=material.server_key,
            hub_cert=material.hub_cert,
            agent_dir=AGENT_DIR,
            agent_path=AGENT_PATH,
            agent_unit=agent_unit(),
            agent_unit_path=AGENT_UNIT_PATH,
            agent_unit_name=AGENT_UNIT_NAME,
            default_user=default_user,
        )
    )
    if len(rendered.encode()) > userdata.MAX_USERDATA_BYTES:
        raise userdata.UserDataError("the pool VM's user-data is over the cloud's limit")
    return rendered


def claim_body(
    *,
    username: str,
    env: Mapping[str, str],
    cmd: Sequence[str],
    metadata_service: bool = False,
    tls: Mapping[str, str] | None = None,
) -> bytes:
    """What the agent receives: the files a cold boot's user-data would write (``UserDataError`` if invalid);
    ``metadata_service`` as for ``userdata.unit_file``; ``tls``: the server's internal_ssl ``key``, ``cert`` and
    ``ca`` (PEM), written to ``userdata.TLS_PATHS``, the key given to the account by the unit."""
    userdata.check_username(username)
    homedir = f"/home/{username}"
    owned = [userdata.TLS_PATHS["keyfile"]] if tls else []
    body = {
        "username": username,
        "homedir": homedir,
        "env_file": userdata.env_file(env),
        "unit_file": userdata.unit_file(
            username=username, homedir=homedir, cmd=list(cmd), metadata_service=metadata_service, owned_files=owned
        ),
    }
    if tls:
        body["tls"] = {k: tls[k] for k in ("key", "cert", "ca")}
    return json.dumps(body).encode()


def client_context(directory: Path) -> ssl.SSLContext:
    """Mutual TLS to exactly one VM: its certificate pinned (the only trusted one), the hub's key presented."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # the VM is identified by its pinned certificate, not by a name
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(directory / "vm.pem"))
    ctx.load_cert_chain(str(directory / "hub.pem"), str(directory / "hub.key"))
    return ctx


async def hand_over(directory: Path, address: str, port: int, body: bytes, *, timeout_seconds: float) -> None:
    """POST the claim to the VM's agent; retried while the agent does not answer yet, until the deadline.
    ``HandoffError`` if the VM refused it, is not the pinned one, or the deadline passed."""
    try:
        ctx = await asyncio.to_thread(client_context, directory)
    except (OSError, ssl.SSLError) as e:
        raise HandoffError(f"the keys of this pool VM cannot be read: {e}") from None
    http = AsyncHTTPClient()
    deadline = time.monotonic() + timeout_seconds
    last = "no answer"
    while time.monotonic() < deadline:
        left = max(1.0, deadline - time.monotonic())
        request = HTTPRequest(
            f"https://{address}:{port}/claim", method="POST", body=body, ssl_options=ctx,
            headers={"Content-Type": "application/json"}, connect_timeout=min(5.0, left), request_timeout=left,
        )  # fmt: skip
        try:
            response = await http.fetch(request, raise_error=False)
        except ssl.SSLError as e:
            raise HandoffError(f"TLS with the pool VM failed (not the VM this hub booted?): {e.reason}") from None
        except (OSError, HTTPClientError) as e:
            last = type(e).__name__
            response = None
        if response is not None and response.code == 200:
            return
        if response is not None and response.code != 599:
            reason = ""
            with contextlib.suppress(ValueError, AttributeError):
                reason = str(json.loads(response.body).get("error", ""))[:300]
            raise HandoffError(f"the pool VM's agent answered {response.code}: {reason}")
        if response is not None and isinstance(response.error, ssl.SSLError):
            raise HandoffError(f"TLS with the pool VM failed (not the VM this hub booted?): {response.error}")
        if response is not None:
            last = str(response.error)[:200]
        await asyncio.sleep(RETRY_SECONDS)
    raise HandoffError(f"the pool VM's agent did not answer within {timeout_seconds:.0f}s ({last})")
