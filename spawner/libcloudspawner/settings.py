"""How this hub reaches its cloud: one :class:`CloudSettings`, built once from the configuration.

The spawner builds it from its traits (:meth:`CloudSettings.from_traits`); the reaper and other tools build
it from the hub's ``jupyterhub_config.py`` without a Spawner (:func:`load_hub_config`). Both go through the
same defaults and the same checks (:func:`check`), which the spawner's trait validators call too, so that a
value is judged the same way wherever it is read. ``cloud.client_for`` keeps one client per settings.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlparse

from traitlets import Dict, Float, HasTraits, Integer, TraitError, Unicode, observe, validate
from traitlets.config import Configurable
from traitlets.config.loader import DeferredConfig, LazyConfigValue

from . import naming
from .catalog import CatalogError, normalize_choices, normalize_profiles
from .config import DriverArguments, driver_arguments
from .hubstate import read_hub_id, state_directory

OPENSTACK_API_VERSIONS = ("1.1", "2.0", "2.1", "2.2")
#: settings a profile may override
PROFILE_OVERRIDES = (
    "userserver_net",
    "security_groups",
    "instance_metadata",
    "userserver_keyname",
    "forceuser",
    "start_timeout",
    "http_timeout",
    "environment",
    "default_url",
    "cmd",
    "args",
    "cloudinit_template",
    "stop_action",
    "home_volume_size_gib",
    "home_volume_type",
    "home_volume_name_template",
)


def _provider(value: str) -> str:
    value = value.strip().lower()
    if not value:
        raise ValueError("libcloud_provider must name a libcloud compute provider, e.g. 'openstack'")
    return value


def _api_version(value: str) -> str:
    if value not in OPENSTACK_API_VERSIONS:
        raise ValueError(f"openstack_api_version must be '1.1' or '2.0' (or 2.1, 2.2), not {value!r}")
    return value


def _positive(name: str) -> Callable[[float], float]:
    def check(value: float) -> float:
        if value <= 0:
            raise ValueError(f"{name} must be a positive number of seconds")
        return value

    return check


def _between(name: str, low: int, high: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high}")
        return value

    return check


def _file(name: str) -> Callable[[str | None], str | None]:
    def check(value: str | None) -> str | None:
        if value is not None and not os.path.isfile(value):
            raise ValueError(f"{name}: no such file {value!r}")
        return value

    return check


def _metadata(value: Mapping[str, Any]) -> Mapping[str, Any]:
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ValueError("instance_metadata keys and values must be strings")
        if len(key) > 255 or len(item) > 255:
            raise ValueError(f"instance_metadata {key[:40]!r}: keys and values are limited to 255 characters")
        if key in naming.RESERVED_METADATA_KEYS:
            raise ValueError(f"instance_metadata: {key!r} is reserved for the spawner's tags")
    return value


def _choices(name: str) -> Callable[[Any], list[tuple[str, str]]]:
    def check(value: Any) -> list[tuple[str, str]]:
        try:
            return [(c.display_name, c.cloud_name) for c in normalize_choices(value, name)]
        except CatalogError as e:
            raise ValueError(str(e)) from None

    return check


def _profiles(value: Any) -> Any:
    try:
        normalize_profiles(value, PROFILE_OVERRIDES)
    except CatalogError as e:
        raise ValueError(str(e)) from None
    return value


def _forceuser(value: str | None) -> str | None:
    return None if value is None else naming.validate_linux_username(value)


def _hub_id(value: str) -> str:
    if not value or len(value) > 255:
        raise ValueError("hub_id must be a non-empty string of at most 255 characters")
    return value


#: setting -> check (raises ValueError with a message naming the setting); returns the normalised value
CHECKS: dict[str, Callable[[Any], Any]] = {
    "libcloud_provider": _provider,
    "openstack_api_version": _api_version,
    "api_timeout_seconds": _positive("api_timeout_seconds"),
    "api_backoff_base_seconds": _positive("api_backoff_base_seconds"),
    "api_backoff_max_seconds": _positive("api_backoff_max_seconds"),
    "api_cache_ttl_seconds": _positive("api_cache_ttl_seconds"),
    "fleet_refresh_seconds": _positive("fleet_refresh_seconds"),
    "api_retries": _between("api_retries", 0, 20),
    "api_max_workers": _between("api_max_workers", 1, 256),
    "ca_bundle": _file("ca_bundle"),
    "clouds_yaml_path": _file("clouds_yaml_path"),
    "image_manifest": _file("image_manifest"),
    "cloudinit_template": _file("cloudinit_template"),
    "hub_id": _hub_id,
    "max_instances": _between("max_instances", 0, 1_000_000),
    "instance_metadata": _metadata,
    "instance_name_template": naming.validate_instance_name_template,
    "home_volume_name_template": naming.validate_volume_name_template,
    "home_volume_size_gib": _between("home_volume_size_gib", 0, 65536),
    "home_volume_timeout_seconds": _positive("home_volume_timeout_seconds"),
    "forceuser": _forceuser,
    "userserver_sizes": _choices("userserver_sizes"),
    "userserver_images": _choices("userserver_images"),
    "profiles": _profiles,
}


def check(name: str, value: Any) -> Any:
    """The normalised ``value`` of setting ``name``, or ``ValueError`` saying what is allowed."""
    checker = CHECKS.get(name)
    return value if checker is None else checker(value)


@dataclass(frozen=True)
class CloudSettings:
    """Everything needed to talk to the cloud. Field names are the spawner's trait names; the defaults
    here are the traits' defaults."""

    libcloudparams: Mapping[str, Any] = field(default_factory=dict, repr=False)
    libcloud_provider: str = "openstack"
    cloud_region: str | None = None
    openstack_api_version: str = "2.0"
    clouds_yaml_cloud: str | None = None
    clouds_yaml_path: str | None = None
    ca_bundle: str | None = None
    api_timeout_seconds: float = 30.0
    api_retries: int = 4
    api_backoff_base_seconds: float = 1.0
    api_backoff_max_seconds: float = 30.0
    api_max_workers: int = 8
    api_cache_ttl_seconds: float = 300.0

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_traits(cls, source: Any) -> CloudSettings:
        """From an object carrying the settings as attributes (the spawner; its traits are checked already)."""
        return cls(**{name: getattr(source, name) for name in cls.names()})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> CloudSettings:
        """From configuration values (unset ones take the defaults), each checked as the spawner checks it."""
        return cls(**{name: check(name, values[name]) for name in cls.names() if name in values})

    def driver_arguments(self) -> DriverArguments:
        """The driver's arguments (credentials from libcloudparams, clouds.yaml or ``OS_*``); ``ca_bundle``
        wins over a clouds.yaml ``cacert``. Raises ``config.CredentialsError``."""
        args = driver_arguments(
            self.libcloudparams,
            provider=self.libcloud_provider,
            region=self.cloud_region,
            api_version=self.openstack_api_version,
            timeout_seconds=self.api_timeout_seconds,
            clouds_yaml_cloud=self.clouds_yaml_cloud,
            clouds_yaml_path=self.clouds_yaml_path,
        )
        return replace(args, ca_bundle=self.ca_bundle) if self.ca_bundle else args

    def key(self) -> str:
        """A stable identity of these settings for sharing one client (the secrets only hashed)."""
        h = hashlib.sha256()
        for name in self.names():
            value = getattr(self, name)
            if isinstance(value, Mapping):
                value = sorted(value.items())
            h.update(f"{name}={value!r}\0".encode("utf-8", "surrogatepass"))
        return h.hexdigest()


def optional_text(help: str) -> Unicode:
    """A configurable string that may stay unset (``None``)."""
    return Unicode(None, allow_none=True, help=help).tag(config=True)


def seconds(default: float, help: str) -> Float:
    return Float(default, help=help).tag(config=True)


def number(default: int, help: str) -> Integer:
    return Integer(default, help=help).tag(config=True)


class CloudAccess(HasTraits):
    """The spawner's cloud-access traits (mixed into ``LibcloudSpawner``: configured as
    ``c.LibcloudSpawner.<name>``), and the one validator of every setting in :data:`CHECKS`."""

    # old name -> (new name, version that introduced the new name)
    _aliases = {"libcloud_driver_params": ("libcloudparams", "2.0")}

    libcloudparams = Dict(
        help="""
        Arguments of the libcloud driver (the original configuration, unchanged).

        `arg_user_id` and `arg_key` are the user name (or application credential id) and the password (or
        application credential secret); every other key is passed to the driver as a keyword argument, e.g.
        `ex_force_auth_version` (`"3.x_password"` for Keystone v3 password, `"3.x_appcred"` for
        application credentials), `ex_force_auth_url`, `ex_force_service_region`, `ex_tenant_name`,
        `ex_domain_name`, `ex_tenant_domain_id`, `api_version`. Other `arg_<name>` keys become `<name>`.

        When it carries no credentials, `clouds_yaml_cloud` or the `OS_*` environment variables are used.
        Alias: `libcloud_driver_params`.
        """,
    ).tag(config=True)

    libcloud_driver_params = Dict(help="Alias of `libcloudparams`.").tag(config=True)

    @observe(*list(_aliases))
    def _alias_changed(self, change):
        new_name, version = self._aliases[change.name]
        self.log.debug("LibcloudSpawner.%s is an alias of %s (since %s)", change.name, new_name, version)
        setattr(self, new_name, change.new)

    libcloud_provider = Unicode(
        CloudSettings.libcloud_provider,
        help="""
        libcloud compute provider name (`libcloud.compute.types.Provider`), e.g. `openstack`, `ec2`,
        `gce`. The spawner is tested on OpenStack; other providers need their `libcloudparams`.
        """,
    ).tag(config=True)

    openstack_api_version = Unicode(
        CloudSettings.openstack_api_version,
        help="""
        libcloud OpenStack driver version, unless `libcloudparams` sets `api_version`.

        `2.0` (default) reads images from Glance and networks from Neutron directly. libcloud's own default
        `1.1` reads them through Nova's image and network proxy APIs, deprecated since compute microversion
        2.36, and finds networks by their Nova `label`. The 2.0 driver authenticates once per service
        (Nova, Glance, Neutron); the spawner shares one token cache between all its driver threads, so this
        costs a few Keystone calls per hub process, not per spawn.
        """,
    ).tag(config=True)

    cloud_region = optional_text(
        "Cloud region of the instances (OpenStack: `ex_force_service_region`, unless libcloudparams sets it).",
    )

    clouds_yaml_cloud = optional_text(
        """
        Name of a `clouds.yaml` entry to take the credentials and region from (read with openstacksdk's
        loader, from the usual places: `./clouds.yaml`, `~/.config/openstack/`, `/etc/openstack/`, or
        `clouds_yaml_path`). Used when `libcloudparams` holds no credentials. Without it, the `OS_*`
        environment variables (`OS_AUTH_URL`, `OS_USERNAME`, ... or `OS_APPLICATION_CREDENTIAL_*`) are used.
        """,
    )

    clouds_yaml_path = optional_text("Explicit path of the `clouds.yaml` file to read `clouds_yaml_cloud` from.")

    ca_bundle = optional_text(
        """
        Path of a CA bundle to verify the cloud API's TLS certificates with (for a private CA).
        TLS verification is always on; a clouds.yaml `cacert` is used when this is unset.
        """,
    )

    api_timeout_seconds = seconds(
        CloudSettings.api_timeout_seconds,
        "Deadline of one cloud API call, in seconds (also the driver's socket timeout).",
    )
    api_retries = number(
        CloudSettings.api_retries,
        "How many times a cloud API call failing transiently (5xx, timeout, 429) is retried.",
    )
    api_backoff_base_seconds = seconds(
        CloudSettings.api_backoff_base_seconds,
        "First retry delay in seconds; doubles on every retry, with jitter.",
    )
    api_backoff_max_seconds = seconds(
        CloudSettings.api_backoff_max_seconds, "Longest delay between two retries, in seconds."
    )
    api_max_workers = number(
        CloudSettings.api_max_workers,
        """
        Threads running cloud API calls for this hub (each with its own driver: libcloud drivers are not
        thread-safe). Calls beyond this wait in a queue, never on the hub's event loop.
        """,
    )
    fleet_refresh_seconds = seconds(
        15.0,
        """
        How often the one shared listing of this hub's instances is refreshed, in seconds. Every running
        server's poll is answered from it: the cloud sees one listing per period, whatever the number of servers.
        """,
    )
    api_cache_ttl_seconds = seconds(
        CloudSettings.api_cache_ttl_seconds, "How long the image, size and network lists are cached, in seconds."
    )

    @validate(*CHECKS)
    def _validate_setting(self, proposal):
        return check(proposal.trait.name, proposal.value)


class CheckedConfig(Configurable):
    """A Configurable whose configured values are judged by :func:`check` (and their trait) before traitlets
    loads them: a wrong one is kept out and recorded in ``config_problems``, so that building the object never
    fails on the administrator's mistake (JupyterHub would answer every user's request with a bare 500)."""

    def _load_config(self, cfg, section_names=None, traits=None):
        """Judge every configured value before traitlets loads it; load the others."""
        traits = traits if traits is not None else self.traits(config=True)
        bad = {}
        for name, value in self._find_my_config(cfg).items():
            if name in traits and not isinstance(value, LazyConfigValue | DeferredConfig):
                try:
                    check(name, traits[name]._validate(self, copy.deepcopy(value)))
                except (TraitError, ValueError) as e:
                    bad[name] = f"{name} = {value!r}: {e}"
        if bad:
            cfg = copy.deepcopy(cfg)
            for section in section_names or self.section_names():
                for name in bad:
                    if section in cfg:
                        cfg[section].pop(name, None)
            self.__dict__.setdefault("_config_problems", {}).update(bad)
        super()._load_config(cfg, section_names, traits)

    @property
    def config_problems(self) -> dict[str, str]:
        """Configured values refused when this object was built (setting -> what is wrong)."""
        return self.__dict__.get("_config_problems", {})


@dataclass(frozen=True)
class HubConfig:
    """What tools outside the hub process need of the hub's configuration file."""

    cloud: CloudSettings
    hub_id: str
    hub_api_url: str
    warm_pool: bool = False  # a warm pool is configured (its idle VMs are the hub's, not orphans)


#: JupyterHub's default database: SQLite in its working directory
DEFAULT_DB_URL = "sqlite:///jupyterhub.sqlite"
#: the configuration sections LibcloudSpawner reads its settings from, in increasing priority
SPAWNER_SECTIONS = ("Spawner", "LibcloudSpawner")
#: renamed settings still read under their old name
ALIASES = {"libcloud_driver_params": "libcloudparams"}


def hub_api_url(hub: Mapping[str, Any]) -> str:
    """The hub's REST API URL on the hub's own host, from its ``c.JupyterHub`` settings: the bind URL's
    scheme and address (or ``hub_ip``/``hub_port``) with JupyterHub's path (``base_url`` + ``hub/api``)."""
    base = str(hub.get("base_url") or "/").strip("/")
    path = ("/" + base if base else "") + "/hub/api"
    if hub.get("hub_bind_url"):
        bound = urlparse(str(hub["hub_bind_url"]))
        return f"{bound.scheme}://{bound.netloc}{path}"
    ip = str(hub.get("hub_ip") or "127.0.0.1")
    ip = "127.0.0.1" if ip in ("0.0.0.0", "::", "*") else ip
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{hub.get('hub_port') or 8081}{path}"


def load_hub_config(path: str) -> HubConfig:
    """Read a ``jupyterhub_config.py`` as the hub does (traitlets' loader) and keep what the spawner's cloud
    settings, hub id and the hub's API URL are. ``ValueError`` names a wrong setting."""
    from traitlets.config import PyFileConfigLoader

    directory, filename = os.path.split(os.path.abspath(path))
    config = PyFileConfigLoader(filename, path=directory).load_config()
    values: dict[str, Any] = {}
    for section in SPAWNER_SECTIONS:
        for key, value in dict(config.get(section, {})).items():
            values[ALIASES.get(key, key)] = value
    hub = dict(config.get("JupyterHub", {}))
    return HubConfig(
        cloud=CloudSettings.from_mapping(values),
        hub_id=check("hub_id", values.get("hub_id") or _kept_hub_id(hub.get("db_url"))),
        hub_api_url=hub_api_url(hub),
        warm_pool=bool(values.get("warm_pool")),
    )


def _kept_hub_id(db_url: str | None) -> str:
    """The id the hub generated and kept beside its database (relative paths from the working directory, as
    the hub resolves them); ``ValueError`` if it cannot be read: tools must not guess a hub's id."""
    directory = state_directory(db_url or DEFAULT_DB_URL)
    try:
        return read_hub_id(directory)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"hub_id is not set in the hub's configuration and the id the hub keeps cannot be read ({e}): set"
            " c.LibcloudSpawner.hub_id, or run this from the hub's working directory"
        ) from None
