"""LibcloudSpawner: every JupyterHub user server in its own cloud VM, through Apache Libcloud.

Only orchestration lives here: the traits (the configuration reference), the form, and the
start/poll/stop/progress/state lifecycle. Names, options, choices and user-data come from the pure helper
modules; every cloud call goes through :mod:`libcloudspawner.cloud`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from jupyterhub.spawner import Spawner, SpawnException
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Bool, Dict, Enum, Float, Integer, List, Unicode, default, observe, validate

from . import naming, options, userdata
from .catalog import Catalog, CatalogError, build_catalog, load_manifest, normalize_choices, normalize_profiles
from .cloud import CloudClient, CloudError, CloudNotFound, CreateOutcomeUnknown, Instance, describe, shared_client
from .config import CredentialsError, driver_arguments

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
)


#: cloud clients by configuration (the key holds the secret only inside this process's memory)
_clients: dict[str, CloudClient] = {}


async def _apply_user_options(spawner: LibcloudSpawner, user_options: Mapping[str, Any]) -> None:
    """Default ``apply_user_options``: validate strictly (HTTP 400 on anything not offered), and apply
    the chosen profile's overrides now, so that the hub's own start deadline sees its ``start_timeout``."""
    spawner._selection = spawner.validate_options(user_options)
    spawner._apply_profile(spawner._selection.profile)


class UserFacingSpawnError(SpawnException):
    """A SpawnException whose ``message`` is what the user reads. JupyterHub 6 shows a failed spawn's
    ``str(exception)`` on the spawn page, which carries the ``log_message`` (cloud error bodies, instance ids),
    unless the exception has a ``jupyterhub_message``: this class provides it."""

    @property
    def jupyterhub_message(self) -> str:
        return self.message


# After a DELETE, how long an instance may show no deletion in progress before it is deleted again.
REDELETE_AFTER_SECONDS = 5.0
# How long a failed start waits for its instance's removal before reporting (the rest goes on in the background).
CLEANUP_WAIT_SECONDS = 3.0
# Pause between two DELETEs of an instance that stop() could not delete (transient errors).
STOP_RETRY_SECONDS = 2.0
# After a create with an unknown outcome found nothing: look again every this many seconds, for up to one
# api_timeout_seconds, before creating again (Nova may still be creating it after our request timed out).
LANDING_CHECK_SECONDS = 2.0
# ...and after such a create, look for a late instance again in the background, this many api_timeouts later.
LATE_LANDING_CHECKS = (2, 4, 8)
# While the VM's state does not change, a progress message at least this often (seconds): a user whose VM
# Nova keeps building for minutes sees that the wait goes on, and for how long.
PENDING_REPORT_SECONDS = 60.0


class LibcloudSpawner(Spawner):
    """Start each single-user server in its own cloud instance (OpenStack by default)."""

    # old name -> (new name, version that introduced the new name)
    _aliases = {"libcloud_driver_params": ("libcloudparams", "2.0")}

    # ------------------------------------------------------------------------------ cloud access
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
        "openstack",
        help="""
        libcloud compute provider name (`libcloud.compute.types.Provider`), e.g. `openstack`, `ec2`,
        `gce`. The spawner is tested on OpenStack; other providers need their `libcloudparams`.
        """,
    ).tag(config=True)

    @validate("libcloud_provider")
    def _validate_provider(self, proposal):
        value = proposal.value.strip().lower()
        if not value:
            raise ValueError("libcloud_provider must name a libcloud compute provider, e.g. 'openstack'")
        return value

    openstack_api_version = Unicode(
        "2.0",
        help="""
        libcloud OpenStack driver version, unless `libcloudparams` sets `api_version`.

        `2.0` (default) reads images from Glance and networks from Neutron directly. libcloud's own default
        `1.1` reads them through Nova's image and network proxy APIs, deprecated since compute microversion
        2.36, and finds networks by their Nova `label`. The 2.0 driver authenticates once per service
        (Nova, Glance, Neutron); the spawner shares one token cache between all its driver threads, so this
        costs a few Keystone calls per hub process, not per spawn.
        """,
    ).tag(config=True)

    @validate("openstack_api_version")
    def _validate_api_version(self, proposal):
        if proposal.value not in ("1.1", "2.0", "2.1", "2.2"):
            raise ValueError(f"openstack_api_version must be '1.1' or '2.0' (or 2.1, 2.2), not {proposal.value!r}")
        return proposal.value

    cloud_region = Unicode(
        None,
        allow_none=True,
        help="Cloud region of the instances (OpenStack: `ex_force_service_region`, unless libcloudparams sets it).",
    ).tag(config=True)

    clouds_yaml_cloud = Unicode(
        None,
        allow_none=True,
        help="""
        Name of a `clouds.yaml` entry to take the credentials and region from (read with openstacksdk's
        loader, from the usual places: `./clouds.yaml`, `~/.config/openstack/`, `/etc/openstack/`, or
        `clouds_yaml_path`). Used when `libcloudparams` holds no credentials. Without it, the `OS_*`
        environment variables (`OS_AUTH_URL`, `OS_USERNAME`, ... or `OS_APPLICATION_CREDENTIAL_*`) are used.
        """,
    ).tag(config=True)

    clouds_yaml_path = Unicode(
        None, allow_none=True, help="Explicit path of the `clouds.yaml` file to read `clouds_yaml_cloud` from."
    ).tag(config=True)

    ca_bundle = Unicode(
        None,
        allow_none=True,
        help="""
        Path of a CA bundle to verify the cloud API's TLS certificates with (for a private CA).
        TLS verification is always on; a clouds.yaml `cacert` is used when this is unset.
        """,
    ).tag(config=True)

    @validate("ca_bundle", "image_manifest", "cloudinit_template", "clouds_yaml_path")
    def _validate_file(self, proposal):
        value = proposal.value
        if value is not None and not os.path.isfile(value):
            raise ValueError(f"{proposal.trait.name}: no such file {value!r}")
        return value

    api_timeout_seconds = Float(
        30.0, help="Deadline of one cloud API call, in seconds (also the driver's socket timeout)."
    ).tag(config=True)
    api_retries = Integer(
        4, help="How many times a cloud API call failing transiently (5xx, timeout, 429) is retried."
    ).tag(config=True)
    api_backoff_base_seconds = Float(
        1.0, help="First retry delay in seconds; doubles on every retry, with jitter."
    ).tag(config=True)
    api_backoff_max_seconds = Float(30.0, help="Longest delay between two retries, in seconds.").tag(config=True)
    api_max_workers = Integer(
        8,
        help="""
        Threads running cloud API calls for this hub (each with its own driver: libcloud drivers are not
        thread-safe). Calls beyond this wait in a queue, never on the hub's event loop.
        """,
    ).tag(config=True)
    api_cache_ttl_seconds = Float(300.0, help="How long the image, size and network lists are cached, in seconds.").tag(
        config=True
    )

    @validate("api_timeout_seconds", "api_backoff_base_seconds", "api_backoff_max_seconds", "api_cache_ttl_seconds")
    def _validate_positive_seconds(self, proposal):
        if proposal.value <= 0:
            raise ValueError(f"{proposal.trait.name} must be a positive number of seconds")
        return proposal.value

    @validate("api_retries")
    def _validate_retries(self, proposal):
        if not 0 <= proposal.value <= 20:
            raise ValueError("api_retries must be between 0 and 20")
        return proposal.value

    @validate("api_max_workers")
    def _validate_workers(self, proposal):
        if not 1 <= proposal.value <= 256:
            raise ValueError("api_max_workers must be between 1 and 256")
        return proposal.value

    # ------------------------------------------------------------------------------ what to boot
    userserver_sizes = List(
        help="""
        Instance sizes (flavors) offered in the form: a list of `("display name", "cloud flavor name")`.
        The first is the default. Example: `[("1vcpu 2Go RAM", "m1.small"), ("4vcpu 64Go RAM", "4c.extramem")]`.
        """,
    ).tag(config=True)

    userserver_images = List(
        help="""
        Images offered in the form: a list of `("display name", "cloud image name or id")`. The first is the
        default. Images of the build manifest (`image_manifest`) are offered after these.
        """,
    ).tag(config=True)

    @validate("userserver_sizes", "userserver_images")
    def _validate_choices(self, proposal):
        try:
            return [(c.display_name, c.cloud_name) for c in normalize_choices(proposal.value, proposal.trait.name)]
        except CatalogError as e:
            raise ValueError(str(e)) from None

    profiles = List(
        Dict(),
        help=f"""
        Named presets offered instead of the size and image lists (like KubeSpawner's `profile_list`).
        Each is a dict: `display_name` (required), `slug` (the value users send; default derived from the
        display name), `description`, `size` and `image` (cloud names, required), `default` (bool), and
        `overrides`: a dict of settings among {", ".join(PROFILE_OVERRIDES)}.
        """,
    ).tag(config=True)

    @validate("profiles")
    def _validate_profiles(self, proposal):
        try:
            normalize_profiles(proposal.value, PROFILE_OVERRIDES)
        except CatalogError as e:
            raise ValueError(str(e)) from None
        return proposal.value

    image_manifest = Unicode(
        None,
        allow_none=True,
        help="""
        Path of the image build manifest (`images/manifest.json`); its images are offered after
        `userserver_images`. See `libcloudspawner.catalog` for the schema.
        """,
    ).tag(config=True)

    image_manifest_cloud = Unicode(
        None, allow_none=True, help="Offer only the manifest's images published to this cloud (its `cloud` field)."
    ).tag(config=True)

    userserver_net = Unicode(
        None,
        allow_none=True,
        help="""
        Network (name or id) to attach the instances to. The hub must reach the instances on `port` there.
        Unset: the cloud's default network.
        """,
    ).tag(config=True)

    userserver_keyname = Unicode(
        None, allow_none=True, help="Name of an SSH key pair of the cloud to inject into the instances (optional)."
    ).tag(config=True)

    security_groups = List(
        Unicode(),
        help="""
        Security groups (names) of the instances. Unset: the cloud's default group.
        They must let the hub reach `port`.
        """,
    ).tag(config=True)

    instance_metadata = Dict(
        help="""
        Extra metadata (string keys and values, at most 255 characters each) set on every instance.
        The `jupyterhub-*` keys are reserved for the spawner's own tags.
        """,
    ).tag(config=True)

    @validate("instance_metadata")
    def _validate_metadata(self, proposal):
        for key, value in proposal.value.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError("instance_metadata keys and values must be strings")
            if len(key) > 255 or len(value) > 255:
                raise ValueError(f"instance_metadata {key[:40]!r}: keys and values are limited to 255 characters")
            if key in naming.RESERVED_METADATA_KEYS:
                raise ValueError(f"instance_metadata: {key!r} is reserved for the spawner's tags")
        return proposal.value

    instance_name_template = Unicode(
        naming.DEFAULT_INSTANCE_NAME_TEMPLATE,
        help="""
        Name of the instances. Fields: `{username}`, `{servername}`, `{hub_id}` (each slugged). A named
        server gets `--{servername}` appended unless the template uses it. Names that needed escaping or
        are too long are hashed, so that they stay valid host names (63 characters) and never collide.
        """,
    ).tag(config=True)

    @validate("instance_name_template")
    def _validate_template(self, proposal):
        return naming.validate_instance_name_template(proposal.value)

    hub_id = Unicode(
        help="""
        Identity of this hub, set as the `jupyterhub-hub-id` metadata of its instances (the reaper and the
        recovery of lost creates look for it). Default: derived from the host name. Set it explicitly when
        several hubs share a cloud project, and keep it stable.
        """,
    ).tag(config=True)

    @default("hub_id")
    def _default_hub_id(self):
        return naming.default_hub_id(socket.gethostname())

    @validate("hub_id")
    def _validate_hub_id(self, proposal):
        if not proposal.value or len(proposal.value) > 255:
            raise ValueError("hub_id must be a non-empty string of at most 255 characters")
        return proposal.value

    forceuser = Unicode(
        None,
        allow_none=True,
        help="""
        Linux user running the server on the instance, for every hub user. Unset: derived from the hub user
        name (used as is when it is a valid, non-system account name; else escaped and hashed).
        """,
    ).tag(config=True)

    @validate("forceuser")
    def _validate_forceuser(self, proposal):
        if proposal.value is None:
            return None
        return naming.validate_linux_username(proposal.value)

    cloudinit_template = Unicode(
        None,
        allow_none=True,
        help="""
        Path of a Jinja2 cloud-config template replacing the packaged `singleuser.yaml.j2`. Rendered with
        StrictUndefined; pass every value through `tojson`. Variables: username, homedir, env_file,
        unit_file, env_path, unit_path, unit_name.
        """,
    ).tag(config=True)

    config_drive = Bool(True, help="Give instances a config drive (cloud-init then needs no metadata service).").tag(
        config=True
    )

    address_type = Enum(
        ["private_first", "public_first", "private", "public"],
        default_value="private_first",
        help="Which instance address the hub connects to: private first with public fallback (default), etc.",
    ).tag(config=True)

    # ------------------------------------------------------------------------------ lifecycle settings
    port = Integer(
        8000,
        help="Port of the single-user server on the instance (the hub must reach it: open it in the security group).",
    ).tag(config=True)

    @default("ip")
    def _default_ip(self):
        return "0.0.0.0"

    @default("start_timeout")
    def _default_start_timeout(self):
        return 900

    @default("http_timeout")
    def _default_http_timeout(self):
        return 60

    @default("poll_interval")
    def _default_poll_interval(self):
        return 60

    startup_poll_interval_seconds = Float(
        3.0, help="While a server starts, how often its instance state and HTTP endpoint are checked, in seconds."
    ).tag(config=True)

    stop_timeout_seconds = Float(
        300.0, help="How long stop() waits for the instance to be gone before giving up (it keeps the delete)."
    ).tag(config=True)

    # ------------------------------------------------------------------------------ state
    instance_id = Unicode(None, allow_none=True)
    instance_name = Unicode(None, allow_none=True)
    instance_address = Unicode(None, allow_none=True)

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return _apply_user_options

    @default("options_form")
    def _default_options_form(self):
        return LibcloudSpawner._render_options_form

    @default("options_from_form")
    def _default_options_from_form(self):
        return self._strict_options_from_form

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._selection: options.Selection | None = None
        self._profile_saved: dict[str, Any] = {}
        self._events: list[dict[str, Any]] = []
        self._events_changed = asyncio.Event()
        self._progress_done = True
        self._cleanup_task: asyncio.Future | None = None
        self._late_watch: asyncio.Future | None = None
        self._starting = False
        self._manifest_cache: tuple[tuple, tuple] | None = None

    # ------------------------------------------------------------------------------ options
    def catalog(self) -> Catalog:
        manifest = ()
        if self.image_manifest:
            stat = os.stat(self.image_manifest)
            key = (self.image_manifest, stat.st_mtime_ns, self.image_manifest_cloud)
            if self._manifest_cache is None or self._manifest_cache[0] != key:
                self._manifest_cache = (key, load_manifest(self.image_manifest, self.image_manifest_cloud))
            manifest = self._manifest_cache[1]
        return build_catalog(
            self.userserver_sizes,
            self.userserver_images,
            normalize_profiles(self.profiles, PROFILE_OVERRIDES),
            manifest,
        )

    @staticmethod
    def _render_options_form(spawner: LibcloudSpawner) -> str:
        catalog = spawner.catalog()
        if not catalog.profiles and len(catalog.sizes) <= 1 and len(catalog.images) <= 1:
            return ""  # nothing to choose: no form
        previous = spawner.orm_spawner.user_options if spawner.orm_spawner is not None else None
        return options.render_form(catalog, previous or spawner.user_options)

    def _strict_options_from_form(self, form_data):
        try:
            user_options = options.options_from_form(form_data)
        except options.InvalidUserOptions as e:
            raise UserFacingSpawnError(str(e), reason="options", status_code=400) from None
        self.validate_options(user_options)
        return user_options

    def validate_options(self, user_options: Any) -> options.Selection:
        """The validated selection for ``user_options``; ``SpawnException`` (HTTP 400) if not offered."""
        try:
            return options.validate_user_options(user_options, self.catalog())
        except options.InvalidUserOptions as e:
            raise UserFacingSpawnError(f"Invalid server options: {e}", reason="options", status_code=400) from None
        except (LookupError, CatalogError) as e:
            raise UserFacingSpawnError(
                "This hub's server choices are misconfigured; please tell the administrator.",
                reason="config",
                status_code=500,
                log_message=f"LibcloudSpawner configuration error: {e}",
            ) from None

    def _apply_profile(self, profile) -> None:
        for key, value in self._profile_saved.items():
            setattr(self, key, value)
        self._profile_saved = {}
        if profile is None:
            return
        for key, value in profile.overrides.items():
            self._profile_saved[key] = getattr(self, key)
            setattr(self, key, value)

    # ------------------------------------------------------------------------------ helpers
    @property
    def linux_user(self) -> str:
        return self.forceuser or naming.linux_username(self.user.name)

    def _instance_name(self) -> str:
        return naming.instance_name(
            self.instance_name_template, username=self.user.name, servername=self.name or "", hub_id=self.hub_id
        )

    def _tags(self) -> dict[str, str]:
        return naming.instance_tags(hub_id=self.hub_id, username=self.user.name, servername=self.name or "")

    def _client(self) -> CloudClient:
        """The shared cloud client of this configuration (built once: reading clouds.yaml is file I/O)."""
        key = repr(
            (
                sorted(self.libcloudparams.items()),
                self.libcloud_provider,
                self.cloud_region,
                self.openstack_api_version,
                self.clouds_yaml_cloud,
                self.clouds_yaml_path,
                self.ca_bundle,
                self.api_timeout_seconds,
                self.api_retries,
                self.api_backoff_base_seconds,
                self.api_backoff_max_seconds,
                self.api_max_workers,
                self.api_cache_ttl_seconds,
            )
        )
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = self._new_client()
        return client

    def _new_client(self) -> CloudClient:
        try:
            args = driver_arguments(
                self.libcloudparams,
                provider=self.libcloud_provider,
                region=self.cloud_region,
                api_version=self.openstack_api_version,
                timeout_seconds=self.api_timeout_seconds,
                clouds_yaml_cloud=self.clouds_yaml_cloud,
                clouds_yaml_path=self.clouds_yaml_path,
            )
            if self.ca_bundle:
                args = type(args)(**{**args.__dict__, "ca_bundle": self.ca_bundle})
            return shared_client(
                args,
                log=self.log,
                timeout_seconds=self.api_timeout_seconds,
                retries=self.api_retries,
                backoff_base_seconds=self.api_backoff_base_seconds,
                backoff_max_seconds=self.api_backoff_max_seconds,
                max_workers=self.api_max_workers,
                cache_ttl_seconds=self.api_cache_ttl_seconds,
            )
        except (CredentialsError, CloudError) as e:
            raise UserFacingSpawnError(
                "This hub cannot reach its cloud (configuration problem); please tell the administrator.",
                reason="config",
                status_code=500,
                log_message=f"LibcloudSpawner cloud configuration error: {e}",
            ) from None

    def _render_userdata(self) -> str:
        template = None
        if self.cloudinit_template:
            template = userdata.load_template(self.cloudinit_template)
        try:
            return userdata.render_userdata(
                username=self.linux_user,
                env=self.get_env(),
                cmd=[*self.cmd, *self.get_args()],
                template=template,
            )
        except userdata.UserDataError as e:
            raise UserFacingSpawnError(
                "The server's start-up script could not be prepared; please tell the administrator.",
                reason="userdata",
                status_code=500,
                log_message=f"LibcloudSpawner cannot render the user-data for {self._log_name}: {e}",
            ) from None

    def _address(self, instance: Instance) -> str | None:
        private, public = list(instance.private_ips), list(instance.public_ips)
        order = {
            "private_first": private + public,
            "public_first": public + private,
            "private": private,
            "public": public,
        }[self.address_type]
        return order[0] if order else None

    def _emit(self, progress: int, message: str) -> None:
        self._events.append({"progress": progress, "message": message})
        self.log.info("%s: %s", self._log_name, message)
        changed, self._events_changed = self._events_changed, asyncio.Event()
        changed.set()

    async def progress(self):
        """The start's real phases, with percentages (JupyterHub streams these to the spawn page)."""
        index = 0
        while True:
            while index < len(self._events):
                yield self._events[index]
                index += 1
            if self._progress_done:
                return
            try:
                await asyncio.wait_for(self._events_changed.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass

    # ------------------------------------------------------------------------------ state
    def get_state(self):
        state = super().get_state()
        if self.instance_id:
            state["instance_id"] = self.instance_id
            state["instance_name"] = self.instance_name
            state["address"] = self.instance_address
        return state

    def load_state(self, state):
        super().load_state(state)
        self.instance_id = state.get("instance_id")
        self.instance_name = state.get("instance_name")
        self.instance_address = state.get("address")

    def _persist_state(self) -> None:
        """Save the state now, not only after start() returns: a hub that crashes mid-spawn then finds
        the instance at restart (poll/get_url), adopts it if it answers, and stops it otherwise."""
        if self.orm_spawner is None or self.db is None:
            return
        try:
            self.orm_spawner.state = self.get_state()
            self.db.commit()
        except Exception:
            self.log.exception("Could not save the state of %s early", self._log_name)

    async def get_url(self):
        """The server's URL from the saved instance address (a restarted hub checks it against its DB)."""
        if self.instance_address and self.server is not None:
            return f"http://{self.instance_address}:{self.port}{self.server.base_url}"
        return await super().get_url()

    def clear_state(self):
        super().clear_state()
        # the hub clears the state right before a new start: forget the last start's progress events,
        # so that an early progress request waits for this start's events instead of replaying old ones
        self._events = []
        self._progress_done = False
        self._forget_instance()

    def _forget_instance(self) -> None:
        self.instance_id = None
        self.instance_name = None
        self.instance_address = None

    # ------------------------------------------------------------------------------ start
    async def start(self):
        self._events = []
        self._progress_done = False
        try:
            self._emit(5, "Checking the server options")
            selection = self.validate_options(self.user_options)  # no cloud call before this
            self._apply_profile(selection.profile)
            return await self._start_with_deadline(selection)
        finally:
            self._progress_done = True
            changed, self._events_changed = self._events_changed, asyncio.Event()
            changed.set()

    async def _start_with_deadline(self, selection: options.Selection) -> str:
        # our own deadline, a little before the hub's start_timeout, so that the user gets a message
        # saying what was too slow (the hub's own timeout says only "Spawn failed") and cleanup starts
        budget = self.start_timeout - 5 if self.start_timeout >= 20 else None
        try:
            return await asyncio.wait_for(self._start(selection), budget)
        except asyncio.TimeoutError:
            phase = self._events[-1]["message"] if self._events else "starting"
            self.log.warning("Start of %s timed out after %ss (last phase: %s)", self._log_name, budget, phase)
            await self._wait_cleanup_briefly()
            raise UserFacingSpawnError(
                f"Your server did not start within {self.start_timeout:.0f} seconds (last step: {phase})."
                " Please try again; if it keeps happening, tell the administrator.",
                reason="timeout",
                status_code=504,
            ) from None

    async def _start(self, selection: options.Selection):
        if self._cleanup_task is not None and not self._cleanup_task.done():
            self._emit(6, "Waiting for the previous attempt's instance to be removed")
            await asyncio.shield(self._cleanup_task)
        self._selection = selection
        user_data = self._render_userdata()
        client = self._client()
        name = self._instance_name()
        tags = self._tags()
        self.instance_name = name
        attempt = _CreateAttempt(name=name, tags=tags)
        self._starting = True
        try:
            return await self._boot(client, selection, user_data, attempt)
        except BaseException as e:
            self._cleanup_task = asyncio.ensure_future(self._cleanup(client, attempt))
            self._forget_instance()
            if isinstance(e, asyncio.CancelledError):
                self.log.warning("Start of %s cancelled (timeout?); removing its instance", self._log_name)
                raise
            await self._wait_cleanup_briefly()
            raise self._user_error(e) from e
        finally:
            self._starting = False
            if attempt.doubtful:
                if self._late_watch is not None:
                    self._late_watch.cancel()
                self._late_watch = asyncio.ensure_future(self._watch_late_landing(client, attempt))

    async def _watch_late_landing(self, client: CloudClient, attempt: _CreateAttempt) -> None:
        """After a create whose outcome was unknown, Nova may carry the request out long after the spawner
        stopped waiting for it. Look again in the background (LATE_LANDING_CHECKS api timeouts later) and
        delete any instance of this server that the spawner does not use, unless a new start of the
        server is in progress (it owns the name then, and removes leftovers itself)."""
        waited = 0.0
        for factor in LATE_LANDING_CHECKS:
            delay = factor * client.timeout_seconds - waited
            await asyncio.sleep(delay)
            waited += delay
            if self._starting:
                continue
            await self._remove_duplicates(client, attempt.name, attempt.tags, keep=self.instance_id)

    async def _wait_cleanup_briefly(self) -> None:
        """Give the cleanup of a failed start a few seconds, then let it go on in the background (stop()
        and the next start() wait for it): the user's message must reach the hub before its own
        start_timeout cancels start(), or the user sees a bare "Spawn failed"."""
        if self._cleanup_task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._cleanup_task), CLEANUP_WAIT_SECONDS)
        except asyncio.TimeoutError:
            self.log.info("Removal of the failed start's instance of %s goes on in the background", self._log_name)
        except Exception:
            self.log.exception("Cleanup after the failed start of %s failed", self._log_name)

    def _user_error(self, e: BaseException) -> BaseException:
        if isinstance(e, SpawnException):
            return e
        if isinstance(e, CloudNotFound):
            return UserFacingSpawnError(
                f"{str(e)[:1].upper()}{str(e)[1:]}; please tell the administrator.",
                reason="config",
                status_code=500,
                log_message=f"LibcloudSpawner: {e}",
            )
        if isinstance(e, CloudError) and e.status == 401:
            return UserFacingSpawnError(
                "The hub's cloud credentials were refused; please tell the administrator.",
                reason="config",
                status_code=500,
                log_message=f"Cloud credentials refused while starting {self._log_name}: {e}",
            )
        if isinstance(e, CloudError):
            message = (
                "The cloud is not answering right now; please try again in a few minutes."
                if e.transient
                else f"The cloud refused to create your server: {describe(e)}"
            )
            return UserFacingSpawnError(
                message, reason="cloud", status_code=503, log_message=f"Cloud error starting {self._log_name}: {e}"
            )
        return e

    async def _boot(self, client: CloudClient, selection, user_data: str, attempt: _CreateAttempt) -> str:
        self._emit(10, f"Looking up image {selection.image_display} and size {selection.size_display}")
        image = await client.image(selection.image)
        size = await client.size(selection.size)
        networks = [await client.network(self.userserver_net)] if self.userserver_net else []

        # An instance with this name and these tags is a leftover of an interrupted start (hub crash):
        # its API token is no longer valid, so it cannot be adopted. Remove it.
        for leftover in await client.find_nodes(name=attempt.name, tags=attempt.tags):
            if not leftover.deleting:
                self.log.warning("Removing leftover instance %s (%s) of %s", leftover.name, leftover.id, self._log_name)
                attempt.ignore.add(leftover.id)
                await client.destroy_node(leftover.id)

        metadata = {**self.instance_metadata, **attempt.tags}
        create_args = dict(
            name=attempt.name,
            size=size,
            image=image,
            networks=networks,
            ex_userdata=user_data,
            ex_metadata=metadata,
            ex_config_drive=self.config_drive,
        )
        if self.userserver_keyname:
            create_args["ex_keyname"] = self.userserver_keyname
        if self.security_groups:
            create_args["security_groups"] = list(self.security_groups)

        self._emit(20, f"Creating virtual machine {attempt.name}")
        instance = None
        for try_number in range(2):
            attempt.sent = True
            try:
                instance = await client.create_node(tracker=attempt, **create_args)
                break
            except CreateOutcomeUnknown as e:
                attempt.doubtful = True
                self.log.warning("Create of %s: outcome unknown (%s); looking it up", attempt.name, e)
                instance = await self._find_created(client, attempt, landing_seconds=client.timeout_seconds)
                if instance is not None:
                    break
                if try_number == 1:
                    raise
                self.log.info("Instance %s was not created; creating it again", attempt.name)
        assert instance is not None
        attempt.instance_id = instance.id
        self.instance_id = instance.id
        self._persist_state()
        self.log.info("Created instance %s (%s) for %s", attempt.name, instance.id, self._log_name)

        self._emit(30, "Virtual machine created; the cloud is booting it")
        instance = await self._wait_running(client, instance)
        address = self._address(instance)
        self.instance_address = address
        self._persist_state()
        url = f"http://{address}:{self.port}"
        self._emit(60, f"Virtual machine running at {address}; waiting for Jupyter to answer")
        await self._wait_http(client, instance.id, url)
        if attempt.doubtful:
            # a create whose answer was lost may still have landed late, next to the one we use
            await self._remove_duplicates(client, attempt.name, attempt.tags, keep=instance.id)
        self._emit(95, "Jupyter is answering")
        return url

    async def _find_created(
        self, client: CloudClient, attempt: _CreateAttempt, landing_seconds: float = 0.0
    ) -> Instance | None:
        """After an unknown create outcome: let the request finish, then look the instance up by name+tags.

        Nothing found is not proof that nothing was created: the cloud may still be handling a request whose
        answer we stopped waiting for. Look again for up to ``landing_seconds`` before giving up."""
        instance = await attempt.settle(client.timeout_seconds + 5)
        if instance is not None:
            return instance
        deadline = time.monotonic() + landing_seconds
        interval = min(LANDING_CHECK_SECONDS, max(landing_seconds / 4, 0.05))
        while True:
            found = [
                i
                for i in await client.find_nodes(name=attempt.name, tags=attempt.tags)
                if i.id not in attempt.ignore and not i.deleting
            ]
            if found or time.monotonic() + interval > deadline:
                break
            await asyncio.sleep(interval)
        for extra in found[1:]:
            self.log.warning("Removing duplicate instance %s (%s)", extra.name, extra.id)
            await client.destroy_node(extra.id)
        return found[0] if found else None

    async def _remove_duplicates(
        self, client: CloudClient, name: str, tags: Mapping[str, str], *, keep: str | None
    ) -> None:
        """Delete every instance of this server (same name and tags) except ``keep``: a create that landed
        after its request timed out. Best effort: a failure is logged (the reaper finds what is left)."""
        try:
            for inst in await client.find_nodes(name=name, tags=tags):
                if inst.id != keep and not inst.deleting:
                    self.log.warning(
                        "Removing duplicate instance %s (%s) of %s (a create that landed late)",
                        inst.name,
                        inst.id,
                        self._log_name,
                    )
                    await client.destroy_node(inst.id)
        except CloudError as e:
            self.log.warning("Could not look for duplicate instances of %s: %s", self._log_name, e)

    async def _wait_running(self, client: CloudClient, instance: Instance) -> Instance:
        progress = 30
        changed_at = reported_at = time.monotonic()
        while True:
            if instance.state == "running" and self._address(instance):
                return instance
            if instance.state == "error":
                fault = await client.fault_message(instance.id)
                raise UserFacingSpawnError(
                    "The cloud could not start your server's virtual machine"
                    + (f": {fault.strip()}" if fault else ".")
                    + " Try another size or image, or tell the administrator.",
                    reason="instance-error",
                    status_code=503,
                    log_message=f"Instance {instance.name} ({instance.id}) of {self._log_name} is in ERROR: "
                    + (fault or "Nova recorded no fault"),
                )
            if instance.deleting:
                raise UserFacingSpawnError(
                    "Your server's virtual machine was deleted while starting.", reason="instance-gone", status_code=503
                )
            await asyncio.sleep(self.startup_poll_interval_seconds)
            progress = min(progress + 2, 55)
            try:
                latest = await client.get_node(instance.id)
            except CloudError as e:
                if not e.transient:
                    raise
                self.log.warning("Could not check instance %s (%s); still waiting", instance.id, e)
                continue
            if latest is None:
                raise UserFacingSpawnError(
                    "Your server's virtual machine disappeared while starting.", reason="instance-gone", status_code=503
                )
            now = time.monotonic()
            if latest.state != instance.state or (latest.task_state != instance.task_state):
                self._emit(progress, f"Virtual machine {latest.state} ({latest.task_state or 'no task'})")
                changed_at = reported_at = now
            elif now - reported_at >= PENDING_REPORT_SECONDS:
                self._emit(
                    progress,
                    f"Virtual machine still {latest.state} ({latest.task_state or 'no task'})"
                    f" after {now - changed_at:.0f}s",
                )
                reported_at = now
            instance = latest

    async def _wait_http(self, client: CloudClient, instance_id: str, url: str) -> None:
        base_url = self.server.base_url if self.server is not None else f"/user/{self.user.name}/"
        api_url = url + base_url.rstrip("/") + "/api"
        http = AsyncHTTPClient()
        started = time.monotonic()
        checks = 0
        while True:
            try:
                response = await http.fetch(
                    HTTPRequest(api_url, connect_timeout=5, request_timeout=10, follow_redirects=False),
                    raise_error=False,
                )
                code = response.code
            except (OSError, HTTPClientError) as e:
                code = getattr(e, "code", 599)
            if code != 599 and code < 500:
                self.log.debug("%s answered %s after %.0fs", api_url, code, time.monotonic() - started)
                return
            checks += 1
            if checks % 5 == 0:
                # is the VM still there? (an ERROR or deleted instance will never answer)
                try:
                    latest = await client.get_node(instance_id, retries=1)
                except CloudError as e:
                    self.log.warning("Could not check instance %s (%s); still waiting for Jupyter", instance_id, e)
                    latest = "unknown"
                if latest is None or (isinstance(latest, Instance) and latest.state in ("error", "terminated")):
                    raise UserFacingSpawnError(
                        "Your server's virtual machine stopped before Jupyter started.",
                        reason="instance-gone",
                        status_code=503,
                    )
                self._emit(
                    min(60 + checks, 90), f"Still waiting for Jupyter to answer ({time.monotonic() - started:.0f}s)"
                )
            await asyncio.sleep(self.startup_poll_interval_seconds)

    async def _cleanup(self, client: CloudClient, attempt: _CreateAttempt) -> None:
        """Remove what a failed, timed-out or cancelled start created (also when the create was lost)."""
        ids = set()
        if attempt.instance_id:
            ids.add(attempt.instance_id)
        elif attempt.sent:
            instance = await attempt.settle(client.timeout_seconds + 5)
            if instance is not None:
                ids.add(instance.id)
            try:
                found = await client.find_nodes(name=attempt.name, tags=attempt.tags)
                ids.update(i.id for i in found if i.id not in attempt.ignore)
            except CloudError as e:
                self.log.error(
                    "Could not look for instance %s after a failed start (%s); the reaper will find it",
                    attempt.name,
                    e,
                )
        for instance_id in ids:
            self.log.info(
                "Deleting instance %s (%s) of the failed start of %s", attempt.name, instance_id, self._log_name
            )
            try:
                await client.destroy_node(instance_id)
                await self._wait_gone(client, instance_id)
            except CloudError as e:
                self.log.error(
                    "Could not delete instance %s (%s) after a failed start: %s", attempt.name, instance_id, e
                )

    async def _delete_until_deadline(self, client: CloudClient, instance_id: str) -> None:
        """DELETE (a 404 counts as deleted, and _wait_gone checks it). JupyterHub forgets the server whatever
        stop() does, so an outage longer than one call's retry budget must not leave the VM behind: transient
        failures are retried until stop_timeout_seconds."""
        deadline = time.monotonic() + self.stop_timeout_seconds
        while True:
            try:
                await client.destroy_node(instance_id)
                return
            except CloudError as e:
                if not e.transient or time.monotonic() + STOP_RETRY_SECONDS >= deadline:
                    raise
                self.log.warning("Deleting instance %s failed (%s); trying again", instance_id, e)
                await asyncio.sleep(STOP_RETRY_SECONDS)

    async def _wait_gone(self, client: CloudClient, instance_id: str) -> bool:
        """Wait (bounded) until the instance is gone, deleting it again if the cloud shows no deletion in
        progress: a DELETE that answered 404 or 5xx while the instance lives must not leave it behind."""
        deadline = time.monotonic() + self.stop_timeout_seconds
        redelete_after = time.monotonic() + REDELETE_AFTER_SECONDS
        while time.monotonic() < deadline:
            try:
                instance = await client.get_node(instance_id, retries=1)
            except CloudError as e:
                self.log.debug("Checking deleted instance %s: %s", instance_id, e)
                instance = "unknown"
            if instance is None or (isinstance(instance, Instance) and instance.state == "terminated"):
                return True
            if isinstance(instance, Instance) and not instance.deleting and time.monotonic() >= redelete_after:
                self.log.warning(
                    "Instance %s still exists and is not being deleted (state %s); deleting it again",
                    instance_id,
                    instance.state,
                )
                redelete_after = time.monotonic() + REDELETE_AFTER_SECONDS
                try:
                    await client.destroy_node(instance_id)
                except CloudError as e:
                    self.log.warning("Deleting instance %s again failed: %s", instance_id, e)
            await asyncio.sleep(min(2.0, self.startup_poll_interval_seconds))
        self.log.warning(
            "Instance %s is still being deleted after %.0fs; leaving it to the cloud"
            " (the reaper, libcloudspawner-reaper, finds it by its tags if it stays)",
            instance_id,
            self.stop_timeout_seconds,
        )
        return False

    async def rename(self, old_name, new_name):
        """A named server is renamed (JupyterHub 6): retag its instance, so that the reaper and the
        recovery of lost creates keep recognising it. The instance keeps its name."""
        if not self.instance_id:
            return
        try:
            await self._client().update_metadata(
                self.instance_id, {naming.TAG_SERVER_NAME: naming.metadata_value(new_name)}
            )
        except CloudError as e:
            raise UserFacingSpawnError(
                "The server's virtual machine could not be relabelled; please try again later.",
                reason="cloud",
                status_code=503,
                log_message=f"Rename of {self._log_name} to {new_name!r}: {e}",
            ) from None
        self.log.info("Instance %s of %s now tagged as server %r", self.instance_id, self._log_name, new_name)

    # ------------------------------------------------------------------------------ poll / stop
    async def poll(self):
        """None while the instance runs or starts; an exit status once it is gone or broken.

        A cloud API failure is *unknown*, not stopped: it returns None and logs.
        """
        if self._cleanup_task is not None and not self._cleanup_task.done():
            return None  # a failed start is still being cleaned up: let stop() wait for it
        if not self.instance_id:
            return 0
        try:
            client = self._client()
            instance = await client.get_node(self.instance_id, retries=1)
        except (CloudError, SpawnException) as e:
            self.log.warning(
                "Cannot check instance %s of %s (%s); assuming it still runs", self.instance_id, self._log_name, e
            )
            return None
        if instance is None:
            self.log.info("Instance %s of %s is gone", self.instance_id, self._log_name)
            return 0
        if instance.state in ("error", "stopped", "terminated") or instance.deleting:
            # the hub will not call stop() for a server that is not running: remove the broken VM here
            self.log.warning(
                "Instance %s of %s is %s; deleting it",
                self.instance_id,
                self._log_name,
                instance.task_state or instance.state,
            )
            try:
                if not instance.deleting:
                    await client.destroy_node(self.instance_id)
            except CloudError as e:
                self.log.error("Could not delete broken instance %s: %s", self.instance_id, e)
                return None
            self.clear_state()
            return 1 if instance.state in ("error", "stopped") else 0
        return None

    async def stop(self, now=False):
        """Delete the instance; idempotent; returns once it is gone (bounded by stop_timeout_seconds)."""
        if self._cleanup_task is not None and not self._cleanup_task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._cleanup_task), timeout=self.stop_timeout_seconds)
            except (asyncio.TimeoutError, CloudError) as e:
                self.log.warning("Cleanup of the failed start of %s is still running: %s", self._log_name, e)
        if not self.instance_id:
            return
        client = self._client()
        instance_id = self.instance_id
        self.log.info("Deleting instance %s (%s) of %s", self.instance_name, instance_id, self._log_name)
        try:
            await self._delete_until_deadline(client, instance_id)
        except CloudError as e:
            self.log.error(
                "Could not delete instance %s (%s) of %s: %s. If the hub forgets it, the reaper"
                " (libcloudspawner-reaper) will find it by its tags.",
                self.instance_name,
                instance_id,
                self._log_name,
                e,
            )
            raise UserFacingSpawnError(
                "Your server's virtual machine could not be deleted right now; please try again later.",
                reason="cloud",
                status_code=503,
            ) from None
        # the same server's other instances (a create that landed after its request timed out): one lookup
        await self._remove_duplicates(client, self.instance_name or self._instance_name(), self._tags(), keep=None)
        if not now:
            await self._wait_gone(client, instance_id)
        self.clear_state()


class _CreateAttempt:
    """What a start created, or may have created: enough to clean up even if the create's answer was lost."""

    def __init__(self, name: str, tags: Mapping[str, str]):
        self.name = name
        self.tags = dict(tags)
        self.sent = False
        self.doubtful = False  # a create's outcome was unknown: another instance may land late
        self.instance_id: str | None = None
        self.pending = None  # concurrent.futures.Future of the create request, while it runs
        self.ignore: set[str] = set()  # leftovers being deleted: not ours

    async def settle(self, timeout: float) -> Instance | None:
        """Wait (bounded) for an in-flight create request; the instance if it answered with one."""
        from .cloud import settle_create

        return await settle_create(self.pending, timeout)
