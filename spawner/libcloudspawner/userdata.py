"""Render the cloud-init user-data that starts jupyterhub-singleuser (pure: no libcloud, no spawner).

The document is a contract (the OpenStack API double and the image tests read it as cloud-init and systemd
would):

- ``users: [{name: <user>, homedir: /home/<user>, ...}]`` creates the user if missing; the image's default
  account (``default``, usually with passwordless sudo) comes first only when ``default_user`` is set (a key
  pair was configured for administrators);
- ``/etc/jupyterhub-singleuser/env`` (``root:root``, ``0600``) holds the environment in systemd
  ``EnvironmentFile=`` syntax: ``KEY="value"``, with ``"`` ``\\`` `````` ``$`` backslash-escaped;
- ``/etc/systemd/system/jupyterhub-singleuser.service`` (``root:root``, ``0644``) runs
  ``ExecStart=`` cmd + args, each argument double-quoted for systemd (C escapes, ``%%``, ``$$``),
  as ``User=<user>`` in ``WorkingDirectory=/home/<user>``, with ``Restart=on-failure``, sandboxed
  (:data:`SANDBOX`, the home writable by path) and, unless ``metadata_service`` is set, with the cloud's
  metadata service closed to the user's account (:func:`metadata_block`); no secret in it;
- ``runcmd: [[systemctl, daemon-reload], [systemctl, enable, --now, jupyterhub-singleuser.service]]``;
- with a home volume: ``/usr/local/sbin/lcs-home-mount`` (``0755``) and ``lcs-home.service`` (a oneshot the
  server's unit ``Requires=`` and is ordered ``After=``) find the disk by its serial
  (``/dev/disk/by-id/virtio-<first 20 characters of the volume id>``), make a filesystem only on a disk that
  has none (``blkid`` and ``wipefs`` agree), and mount it on the user's home before the server starts.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import jinja2

#: Nova refuses user-data larger than 65535 bytes (before base64)
MAX_USERDATA_BYTES = 65535
DEFAULT_TEMPLATE = "singleuser.yaml.j2"
ENV_PATH = "/etc/jupyterhub-singleuser/env"
UNIT_NAME = "jupyterhub-singleuser.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
HOME_UNIT_NAME = "lcs-home.service"
HOME_UNIT_PATH = f"/etc/systemd/system/{HOME_UNIT_NAME}"
HOME_SCRIPT_PATH = "/usr/local/sbin/lcs-home-mount"
#: the server's internal_ssl files on the VM (``JUPYTERHUB_SSL_KEYFILE``, ``_CERTFILE``, ``_CLIENT_CA``)
TLS_DIR = "/etc/jupyterhub-singleuser/ssl"
TLS_PATHS = {"keyfile": f"{TLS_DIR}/server.key", "certfile": f"{TLS_DIR}/server.crt", "cafile": f"{TLS_DIR}/ca.crt"}
#: Nova gives a virtio disk the volume id as serial, which the guest truncates to 20 characters
SERIAL_LENGTH = 20
_VOLUME_ID_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")

#: the mount script: arguments user, serial, home directory. Never formats a disk carrying anything.
HOME_SCRIPT = """#!/bin/sh
# jupyter-libcloudspawner: mount the home volume on the user's home (arguments: user serial home).
set -eu
user="$1"; serial="$2"; home="$3"
dev=""
tries=0
while [ -z "$dev" ] && [ "$tries" -lt 120 ]; do
  for candidate in "/dev/disk/by-id/virtio-$serial" /dev/disk/by-id/*"$serial"; do
    case "$candidate" in *-part*) continue ;; esac
    if [ -b "$candidate" ]; then dev="$candidate"; break; fi
  done
  [ -n "$dev" ] || { tries=$((tries + 1)); sleep 1; }
done
[ -n "$dev" ] || { echo "lcs-home: no disk with serial $serial after 120 s" >&2; exit 1; }
if mountpoint -q "$home"; then exit 0; fi
fresh=0
rc=0; blkid -p "$dev" >/dev/null 2>&1 || rc=$?
if [ "$rc" -eq 2 ] && [ -z "$(wipefs --no-act --noheadings "$dev")" ]; then
  mkfs.ext4 -q -L jupyter-home "$dev"
  fresh=1
elif [ "$rc" -ne 0 ]; then
  echo "lcs-home: cannot tell whether $dev holds a filesystem (blkid $rc): not formatting it" >&2
  exit 1
fi
mkdir -p "$home"
mount "$dev" "$home"
if [ "$fresh" -eq 1 ]; then cp -a /etc/skel/. "$home"/; fi
if [ "$(stat -c %u "$home")" != "$(id -u "$user")" ]; then chown -R "$user:" "$home"; fi
"""

_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LINUX_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# characters a YAML double-quoted scalar must not carry raw: C0/C1 controls, DEL, YAML's extra line
# breaks (NEL, LS, PS), the BOM, and non-characters PyYAML's reader refuses
_YAML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")
# characters written as C escapes inside a systemd ExecStart argument
_SYSTEMD_C_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


# control characters systemd refuses in an environment value (all but newline): it drops the whole variable
_SYSTEMD_ENV_DROPPED = re.compile("[\x01-\x09\x0b-\x1f\x7f]")


#: systemd's sandbox for the server and every kernel it starts, checked in the booted image (``systemd-analyze
#: security``). Left out, because a notebook server needs them: ``PrivateNetwork`` and ``IPAddressDeny=any``
#: (it serves on the network), ``MemoryDenyWriteExecute`` (JIT compilers: numba, JAX, PyPy), ``ProcSubset=pid``
#: (``/proc/meminfo``, ``/proc/cpuinfo``), ``PrivateUsers`` (files of other accounts would show as nobody).
SANDBOX = (
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "read-only"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"),
    ("ProtectProc", "invisible"),
    ("RestrictSUIDSGID", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictNamespaces", "yes"),
    ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK"),
    ("LockPersonality", "yes"),
    ("RemoveIPC", "yes"),
    ("SystemCallArchitectures", "native"),
    ("SystemCallFilter", "@system-service"),
    ("SystemCallFilter", "~@privileged"),
    ("SystemCallErrorNumber", "EPERM"),
    ("CapabilityBoundingSet", ""),
    ("AmbientCapabilities", ""),
)
#: the cloud's metadata service (OpenStack, EC2 and others), over IPv4 and IPv6
METADATA_ADDRESSES = ("169.254.169.254", "fe80::a9fe:a9fe")
#: the nftables table holding the rule that closes the metadata service to the server's account
METADATA_NFT_TABLE = "inet jupyterhub_singleuser"


class UserDataError(ValueError):
    """The user-data cannot be rendered safely (bad key, value, or too large for the cloud)."""


class InvalidEnvironmentValue(UserDataError):
    """An environment variable's value the server would never receive; ``key`` names the variable."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def yaml_quote(value: object) -> str:
    """``value`` as a YAML double-quoted scalar that PyYAML (and so cloud-init) reads back exactly.

    JSON strings are YAML, but ``ensure_ascii`` would split characters beyond U+FFFF into surrogate
    escapes that PyYAML does not join; so non-ASCII text stays raw (UTF-8) and only the characters
    YAML treats as breaks or refuses are escaped.
    """
    if isinstance(value, str):
        _check_text(value, "value")
    text = json.dumps(value, ensure_ascii=False)
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _check_text(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UserDataError(f"{what} is not valid Unicode text (lone surrogate)") from None
    if "\x00" in value:
        raise UserDataError(f"{what} contains a NUL character, which neither YAML files nor processes carry")


def env_file(env: Mapping[str, str]) -> str:
    """The environment as a systemd ``EnvironmentFile=``: ``KEY="value"`` lines, keys sorted."""
    lines = []
    for key in sorted(env):
        value = env[key]
        if not isinstance(key, str) or not _ENV_KEY_RE.match(key):
            raise UserDataError(f"environment variable name {key!r} is not valid (use [A-Za-z_][A-Za-z0-9_]*)")
        if not isinstance(value, str):
            raise UserDataError(f"environment variable {key} must be a string, not {type(value).__name__}")
        _check_text(value, f"environment variable {key}")
        dropped = _SYSTEMD_ENV_DROPPED.search(value)
        if dropped:
            raise InvalidEnvironmentValue(
                key,
                f"environment variable {key} contains the control character {dropped.group()!r}: systemd would"
                " drop the variable and the server would start without it",
            )
        escaped = re.sub(r'(["\\`$])', r"\\\1", value)
        lines.append(f'{key}="{escaped}"')
    return "".join(line + "\n" for line in lines)


def systemd_quote(arg: str) -> str:
    """One ``ExecStart=`` argument, double-quoted: C escapes, ``%`` -> ``%%``, ``$`` -> ``$$``."""
    _check_text(arg, "command argument")
    out = []
    for ch in arg:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "%":
            out.append("%%")
        elif ch == "$":
            out.append("$$")
        elif ch in _SYSTEMD_C_ESCAPES:
            out.append(_SYSTEMD_C_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def metadata_block(username: str) -> str:
    """The nftables commands (one transaction) that reject ``username``'s packets to the metadata service: a
    TCP connect is refused at once (a reset), anything else gets ICMP admin-prohibited. Rejected, not dropped:
    a dropped SYN (as systemd's ``IPAddressDeny=`` drops it) leaves ``connect()`` waiting for its timeout.
    Idempotent: the table is emptied and filled again."""
    table = METADATA_NFT_TABLE
    rules = []
    for family, address in (("ip", METADATA_ADDRESSES[0]), ("ip6", METADATA_ADDRESSES[1])):
        match = f'output meta skuid "{username}" {family} daddr {address}'
        rules.append(f"add rule {table} {match} meta l4proto tcp counter reject with tcp reset")
        rules.append(f"add rule {table} {match} counter reject with icmpx admin-prohibited")
    return " ; ".join(
        [
            f"add table {table}",
            f"flush table {table}",
            f"add chain {table} output {{ type filter hook output priority 0 ; policy accept ; }}",
            *rules,
        ]
    )


def unit_file(
    *,
    username: str,
    homedir: str,
    cmd: Sequence[str],
    metadata_service: bool = False,
    requires: Sequence[str] = (),
    owned_files: Sequence[str] = (),
) -> str:
    """The systemd unit running ``cmd`` as ``username`` with the environment file, sandboxed, after the
    ``requires`` units (the home volume's mount); unless
    ``metadata_service``, the metadata service is closed to the account (an nftables rule installed as root
    before every start, ``ExecStartPre=+``, which fails the start where it cannot be installed). The
    ``owned_files`` (the server's TLS key) are given to the account as root before every start: cloud-init writes
    files before it creates users, so ``write_files`` cannot name the account as owner. No secrets."""
    if not cmd:
        raise UserDataError("the single-user command is empty (set Spawner.cmd)")
    exec_start = " ".join(systemd_quote(str(a)) for a in cmd)
    closed = ""
    if not metadata_service:
        closed = f"ExecStartPre=+/usr/sbin/nft {systemd_quote(metadata_block(username))}\n"
    closed += "".join(f"ExecStartPre=+/bin/chown {systemd_quote(username)} {systemd_quote(f)}\n" for f in owned_files)
    sandbox = "".join(f"{key}={value}\n" for key, value in SANDBOX)
    needs = "".join(f"Requires={u}\nAfter={u}\n" for u in requires)
    return (
        "[Unit]\n"
        "Description=JupyterHub single-user server (started by jupyter-libcloudspawner)\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        f"{needs}"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"User={username}\n"
        f"WorkingDirectory={homedir}\n"
        f"EnvironmentFile={ENV_PATH}\n"
        f"ExecStart={exec_start}\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        f"{closed}"
        f"ReadWritePaths={homedir}\n"
        f"{sandbox}"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def volume_serial(volume_id: str) -> str:
    """The serial a guest sees for a virtio disk of this volume (``/dev/disk/by-id/virtio-<serial>``)."""
    if not _VOLUME_ID_RE.match(volume_id):
        raise UserDataError(f"{volume_id!r} is not a volume id")
    return volume_id[:SERIAL_LENGTH]


def home_unit_file(*, username: str, homedir: str, volume_id: str) -> str:
    """The oneshot unit mounting the home volume before the server's unit starts."""
    args = " ".join(systemd_quote(a) for a in (HOME_SCRIPT_PATH, username, volume_serial(volume_id), homedir))
    return (
        "[Unit]\n"
        "Description=Home volume of the JupyterHub user (mounted by jupyter-libcloudspawner)\n"
        f"Before={UNIT_NAME}\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        "TimeoutStartSec=300\n"
        f"ExecStart={args}\n"
    )


def load_template(path: str | None = None, name: str = DEFAULT_TEMPLATE) -> str:
    """The template text: ``path`` if given (an administrator's override), else the packaged file ``name``
    (default: the user server's template).

    The packaged template is ``libcloudspawner/cloudinit/`` in the wheel, or the repository's
    ``cloudinit/`` when running from a source tree.
    """
    if path is not None:
        try:
            return Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise UserDataError(f"cannot read the cloud-init template {path}: {e}") from e
    return _packaged_template(name)


@functools.lru_cache(maxsize=4)
def _packaged_template(name: str = DEFAULT_TEMPLATE) -> str:
    packaged = resources.files("libcloudspawner").joinpath("cloudinit", name)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    source_tree = Path(__file__).resolve().parents[2] / "cloudinit" / name
    if source_tree.is_file():
        return source_tree.read_text(encoding="utf-8")
    raise UserDataError(
        f"the cloud-init file {name} is missing from the installation; reinstall"
        " jupyter-libcloudspawner or set LibcloudSpawner.cloudinit_template"
    )


def environment() -> jinja2.Environment:
    """The Jinja2 environment of every cloud-config template (StrictUndefined, ``tojson`` quoting for YAML)."""
    return _environment()


def check_username(username: object) -> str:
    """``username`` if it is a Linux account name the templates accept; else ``UserDataError``."""
    if not isinstance(username, str) or not _LINUX_USER_RE.match(username):
        raise UserDataError(f"{username!r} is not a valid Linux username ([a-z_][a-z0-9_-]{{0,31}})")
    return username


def _environment() -> jinja2.Environment:
    # YAML, not HTML: every value goes through tojson (a YAML-safe quoting), so autoescape is off
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701
    )
    env.filters["tojson"] = yaml_quote
    return env


def render_userdata(
    *,
    username: str,
    env: Mapping[str, str],
    cmd: Sequence[str],
    template: str | None = None,
    default_user: bool = False,
    metadata_service: bool = False,
    home_volume_id: str | None = None,
    tls_files: Sequence[Mapping[str, str]] = (),
) -> str:
    """Render the cloud-config for ``username`` running ``cmd`` with ``env``; ``tls_files``: the server's
    internal_ssl key, certificate and CA (``path``, ``permissions``, ``content``; ``owner`` ``user`` for the key,
    given to the account by the unit); ``default_user``: keep the
    image's default account (only when a key pair lets an administrator log in with it);
    ``metadata_service``: let the server's account reach the cloud's metadata service; ``home_volume_id``:
    the volume attached at boot that is mounted on the user's home before the server starts.

    ``template`` is template *text* (``None``: the packaged ``singleuser.yaml.j2``). Raises
    ``UserDataError`` for an invalid username, environment name or value, or a document over Nova's
    64 KiB limit.
    """
    check_username(username)
    homedir = f"/home/{username}"
    source = load_template() if template is None else template
    home = {}
    if home_volume_id:
        home = {"path": HOME_UNIT_PATH, "unit_file": home_unit_file(username=username, homedir=homedir,
                volume_id=home_volume_id), "script_path": HOME_SCRIPT_PATH, "script": HOME_SCRIPT}  # fmt: skip
    try:
        rendered = (
            _environment()
            .from_string(source)
            .render(
                username=username,
                homedir=homedir,
                env_file=env_file(env),
                unit_file=unit_file(
                    username=username,
                    homedir=homedir,
                    cmd=list(cmd),
                    metadata_service=metadata_service,
                    requires=[HOME_UNIT_NAME] if home else [],
                    owned_files=[f["path"] for f in tls_files if f.get("owner") == "user"],
                ),
                env_path=ENV_PATH,
                unit_path=UNIT_PATH,
                unit_name=UNIT_NAME,
                default_user=default_user,
                home_volume=home,
                tls_files=[{k: f[k] for k in ("path", "permissions", "content")} for f in tls_files],
            )
        )
    except jinja2.TemplateError as e:
        raise UserDataError(f"the cloud-init template does not render: {e}") from e
    size = len(rendered.encode("utf-8"))
    if size > MAX_USERDATA_BYTES:
        raise UserDataError(
            f"the rendered user-data is {size} bytes, over the cloud's limit of {MAX_USERDATA_BYTES}:"
            " shorten the environment (Spawner.environment) or the command"
        )
    return rendered
