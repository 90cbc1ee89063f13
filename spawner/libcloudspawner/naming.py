"""Instance and home volume names, Linux usernames and metadata tags (pure: no libcloud, no spawner).

The rules follow kubespawner's ``slugs.py`` (after CVE-2020-15110): a value that is already a safe slug is
used as it is; anything else is lowercased, stripped of unsafe characters and given a hash of the *original*
value, separated by ``---``. A safe slug never contains ``--``, so an escaped name can never equal an
unescaped one, and two different inputs can only meet through a hash collision.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from collections.abc import Iterable, Mapping

#: Nova accepts 255 characters, but the name becomes the guest's hostname: one DNS label.
MAX_INSTANCE_NAME_LENGTH = 63
#: Nova caps metadata keys and values at 255 characters each.
MAX_METADATA_LENGTH = 255
#: useradd's limit on Debian/Ubuntu.
MAX_LINUX_USERNAME_LENGTH = 32
HASH_LENGTH = 12

TAG_HUB_ID = "jupyterhub-hub-id"
TAG_USER = "jupyterhub-user"
TAG_SERVER_NAME = "jupyterhub-server-name"
TAG_MANAGED_BY = "jupyterhub-managed-by"
#: a random token per start: background work of a start only ever deletes instances carrying its own
TAG_SPAWN_ID = "jupyterhub-spawn-id"
MANAGED_BY = "libcloudspawner"
TAG_VOLUME = "jupyterhub-volume"
HOME_VOLUME = "home"
#: a warm pool VM (no user yet): its pool key, the fingerprint of what it was booted with, its member id
TAG_POOL = "jupyterhub-pool"
TAG_POOL_FINGERPRINT = "jupyterhub-pool-fingerprint"
TAG_POOL_MEMBER = "jupyterhub-pool-member"
RESERVED_METADATA_KEYS = frozenset(
    {TAG_HUB_ID, TAG_USER, TAG_SERVER_NAME, TAG_MANAGED_BY, TAG_SPAWN_ID, TAG_VOLUME, TAG_POOL,
     TAG_POOL_FINGERPRINT, TAG_POOL_MEMBER}
)  # fmt: skip

DEFAULT_INSTANCE_NAME_TEMPLATE = "jupyter-{username}"
#: one home volume per user, shared by the user's servers (one at a time); add {servername} for one per server
DEFAULT_VOLUME_NAME_TEMPLATE = "jupyter-home-{username}"
#: fields an instance name template may use
TEMPLATE_FIELDS = frozenset({"username", "servername", "hub_id"})

_SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_LINUX_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
#: default accounts of the distributions' cloud images (cloud-init's ``default`` user, often with sudo):
#: a hub user is never mapped onto one, whatever image the administrator offers
DISTRIBUTION_DEFAULT_USERS = frozenset(
    {
        "debian",
        "ubuntu",
        "cloud-user",
        "ec2-user",
        "centos",
        "fedora",
        "rocky",
        "almalinux",
        "admin",
        "core",
        "alpine",
        "arch",
        "opensuse",
        "freebsd",
        "cloud",
        "cloudadmin",
        "lcs-build",  # this project's image build login (removed before the image is saved)
    }
)
#: accounts of a Debian/Ubuntu cloud image that a hub user must never be mapped onto (plus every
#: ``systemd-*`` and ``_*`` account: the distributions' namespaces for system users)
RESERVED_LINUX_USERS = DISTRIBUTION_DEFAULT_USERS | frozenset(
    {
        "root",
        "daemon",
        "bin",
        "sys",
        "sync",
        "games",
        "man",
        "lp",
        "mail",
        "news",
        "uucp",
        "proxy",
        "www-data",
        "backup",
        "list",
        "irc",
        "gnats",
        "nobody",
        "_apt",
        "messagebus",
        "sshd",
        "syslog",
        "polkitd",
        "tss",
        "uuidd",
        "tcpdump",
        "landscape",
        "pollinate",
        "lxd",
        "dnsmasq",
        "sudo",
        "adm",
        "staff",
        "users",
        "wheel",
        "shadow",
        "disk",
        "kmem",
        "tty",
        "dialout",
        "systemd-network",
        "systemd-resolve",
        "systemd-timesync",
        "ntp",
        "ntpsec",
        "statd",
        "usbmux",
        "dhcpcd",
        "fwupd-refresh",
        "netdev",
        "plugdev",
        "input",
        "render",
        "video",
        "audio",
        "kvm",
        "crontab",
        "operator",
        "ssh",
        "src",
        "utmp",
        "voice",
        "cdrom",
        "floppy",
        "tape",
        "fax",
        "dip",
        "sasl",
        "nogroup",
        "sgx",
    }
)


def _hash(*parts: str, length: int = HASH_LENGTH) -> str:
    """A short stable hash of several values (NUL-separated, so ("a", "bc") != ("ab", "c"))."""
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:length]


def is_safe_slug(value: str) -> bool:
    """True for lowercase alphanumerics and single dashes, not starting or ending with a dash."""
    return bool(_SLUG_RE.match(value)) and "--" not in value


def _strip(value: str) -> str:
    """Lowercase and keep only ``[a-z0-9-]``, without runs of dashes or dashes at the ends."""
    kept = re.sub(r"[^a-z0-9-]+", "-", value.lower())
    return re.sub(r"-{2,}", "-", kept).strip("-")


def safe_slug(value: str, max_length: int = MAX_INSTANCE_NAME_LENGTH) -> str:
    """``value`` itself if it is a safe slug that fits, else ``<stripped prefix>---<hash of value>``."""
    if is_safe_slug(value) and len(value) <= max_length:
        return value
    return _strip_and_hash(value, _hash(value), max_length)


def _strip_and_hash(value: str, digest: str, max_length: int) -> str:
    prefix_length = max_length - len(digest) - 3
    prefix = _strip(value)[:prefix_length].strip("-") or "x"
    return f"{prefix}---{digest}"


def validate_instance_name_template(template: str, setting: str = "instance_name_template") -> str:
    """Check that ``template`` only uses known fields and names the user; return it.

    Raises ``ValueError`` with a message fit for an administrator (naming ``setting``).
    """
    fields = set()
    try:
        for _literal, field, spec, conversion in string.Formatter().parse(template):
            if field is None:
                continue
            if spec or conversion:
                raise ValueError(f"{setting}: no format spec or conversion allowed in {{{field}}}")
            fields.add(field)
    except ValueError as e:
        raise ValueError(f"{setting} {template!r} is not a valid template: {e}") from None
    unknown = fields - TEMPLATE_FIELDS
    if unknown:
        raise ValueError(
            f"{setting} {template!r} uses unknown field(s) {sorted(unknown)}; allowed: {sorted(TEMPLATE_FIELDS)}"
        )
    if "username" not in fields:
        raise ValueError(f"{setting} {template!r} must contain {{username}}")
    if "servername" in fields:
        between = re.search(r"\{username\}(.*)\{servername\}|\{servername\}(.*)\{username\}", template)
        if between is None or "--" not in (between.group(1) or between.group(2) or ""):
            raise ValueError(
                f"{setting} {template!r}: separate {{username}} and {{servername}} with"
                " '--' (for example 'jupyter-{username}--{servername}'), or two users' servers could"
                " get the same name"
            )
    return template


def validate_volume_name_template(template: str) -> str:
    """:func:`validate_instance_name_template` for ``home_volume_name_template``."""
    return validate_instance_name_template(template, "home_volume_name_template")


def instance_name(
    template: str,
    *,
    username: str,
    servername: str = "",
    hub_id: str = "",
    max_length: int = MAX_INSTANCE_NAME_LENGTH,
) -> str:
    """The instance name of ``username``'s server ``servername`` (``""`` is the default server).

    Every field is slugged; a named server whose name the template does not use gets ``--<server>``
    appended (a safe slug has no ``--``, so the split is unambiguous). When anything had to be escaped
    or the result does not fit, the whole name is hashed over the raw inputs, so it never collides with
    another user's or another server's name.
    """
    validate_instance_name_template(template)
    return _render(template, username=username, servername=servername, hub_id=hub_id, max_length=max_length)


def volume_server_name(template: str, servername: str) -> str:
    """The server a home volume belongs to: ``servername`` when the template has ``{servername}`` (one volume
    per server), else ``""`` (one volume per user, whichever server uses it)."""
    return servername if "{servername}" in template else ""


def volume_name(template: str, *, username: str, servername: str = "", hub_id: str = "") -> str:
    """The home volume name of ``username`` (and of ``servername`` if the template names it): slugged and
    hashed like :func:`instance_name`, but a server the template does not name shares the user's volume."""
    validate_volume_name_template(template)
    servername = volume_server_name(template, servername)
    return _render(template, username=username, servername=servername, hub_id=hub_id,
                   max_length=MAX_INSTANCE_NAME_LENGTH)  # fmt: skip


def _render(template: str, *, username: str, servername: str, hub_id: str, max_length: int) -> str:
    fields = {
        "username": safe_slug(username),
        "servername": safe_slug(servername) if servername else "",
        "hub_id": safe_slug(hub_id) if hub_id else "",
    }
    name = template.format(**fields)
    if servername and "{servername}" not in template:
        name = f"{name}--{fields['servername']}"
    escaped = fields["username"] != username or (servername and fields["servername"] != servername)
    if escaped or not _SLUG_RE.match(name) or len(name) > max_length:
        return _strip_and_hash(name, _hash(template, username, servername, hub_id), max_length)
    return name


def linux_username(hub_username: str, reserved: Iterable[str] = ()) -> str:
    """A safe Linux account name ``[a-z_][a-z0-9_-]{0,31}`` for a hub user.

    Used unchanged when it already is one and is neither a system account nor one of ``reserved`` (the
    accounts the image's manifest entry records); otherwise escaped and hashed (``<prefix>_<hash>``), so that
    two hub users never share an account.
    """
    if (
        _LINUX_USER_RE.match(hub_username)
        and not _is_reserved_linux_user(hub_username)
        and hub_username not in frozenset(reserved)
    ):
        return hub_username
    digest = _hash(hub_username, length=10)
    prefix = re.sub(r"[^a-z0-9_]+", "_", hub_username.lower()).strip("_-")
    if not prefix or not re.match(r"[a-z_]", prefix[0]):
        prefix = "u" + prefix
    prefix = prefix[: MAX_LINUX_USERNAME_LENGTH - len(digest) - 1]
    return f"{prefix}_{digest}"


def _is_reserved_linux_user(name: str) -> bool:
    return name in RESERVED_LINUX_USERS or name.startswith(("systemd-", "_"))


def validate_linux_username(name: str) -> str:
    """Return ``name`` if it is a valid, non-system Linux account name; else raise ``ValueError``."""
    if not _LINUX_USER_RE.match(name):
        raise ValueError(
            f"{name!r} is not a valid Linux username: use 1-32 characters [a-z0-9_-], starting with [a-z_]"
        )
    if _is_reserved_linux_user(name):
        raise ValueError(f"{name!r} is a system account of the image; choose another user name")
    return name


def metadata_value(value: str) -> str:
    """``value`` capped to Nova's 255 characters; longer values keep a prefix and a hash of the whole."""
    if len(value) <= MAX_METADATA_LENGTH:
        return value
    digest = _hash(value)
    return f"{value[: MAX_METADATA_LENGTH - len(digest) - 1]}~{digest}"


def instance_tags(*, hub_id: str, username: str, servername: str) -> dict[str, str]:
    """The metadata identifying a hub's instance: used to find it again (reattach, reaper, lost creates)."""
    return {
        TAG_HUB_ID: metadata_value(hub_id),
        TAG_USER: metadata_value(username),
        TAG_SERVER_NAME: metadata_value(servername),
        TAG_MANAGED_BY: MANAGED_BY,
    }


def new_spawn_id() -> str:
    """A fresh token identifying one create attempt (its ``jupyterhub-spawn-id`` tag)."""
    return secrets.token_hex(8)


def volume_tags(*, hub_id: str, username: str, servername: str) -> dict[str, str]:
    """The metadata identifying a hub's home volume (``servername``: :func:`volume_server_name`)."""
    return {**instance_tags(hub_id=hub_id, username=username, servername=servername), TAG_VOLUME: HOME_VOLUME}


def tags_match(metadata: Mapping[str, object] | None, tags: Mapping[str, str]) -> bool:
    """True when ``metadata`` (an instance's) carries every one of ``tags`` with the same value."""
    metadata = metadata or {}
    return all(metadata.get(key) == value for key, value in tags.items())
