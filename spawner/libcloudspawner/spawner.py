"""LibcloudSpawner: every JupyterHub user server in its own cloud VM, through Apache Libcloud.

The Spawner contract only: the traits (their help is the configuration reference) and start / poll / stop /
rename, with the choice of the start's path (the server's kept VM, a warm-pool VM, or a fresh boot). The rooms
beside it, mixed in: ``choices`` (the options form, one validation, the kept selection), ``serverstate``
(get_state / load_state, the hub's records beside its database), ``freshboot`` (the fresh-boot path),
``resume`` (VMs kept between stops, home volumes, delete_forever), ``settings`` (the cloud settings, checked
once) and ``pool`` (the warm pool's settings). Below them: ``cloud`` (the only module talking to the cloud),
``provision`` (create with recovery, waits, cleanup, deletion), ``requests`` (the create request as data),
``errors`` (what the user reads), ``progress``, and the pure helpers ``naming``, ``options``, ``catalog`` and
``userdata``.
"""

from __future__ import annotations

import asyncio
import contextlib

from jupyterhub.spawner import Spawner, SpawnException
from traitlets import Bool, Dict, Enum, List, Unicode, default

from . import choices, errors, hubstate, internal_tls, naming, options, pool, resume
from .choices import UserChoices
from .cloud import CloudClient, CloudError, Instance, client_for
from .fleet import UNKNOWN, fleet_for
from .freshboot import FreshBoot
from .progress import ProgressLog
from .provision import CLEANUP_WAIT_SECONDS, Background, Provisioner, address_of
from .serverstate import ServerState
from .settings import PROFILE_OVERRIDES, CheckedConfig, CloudAccess, CloudSettings, number, optional_text, seconds
from .volumes import HomeVolumeError


class LibcloudSpawner(
    CheckedConfig, UserChoices, ServerState, FreshBoot, resume.KeptServer, Spawner, CloudAccess, pool.PoolSettings
):
    """Start each single-user server in its own cloud instance (OpenStack by default).

    The cloud-access traits (credentials, region, API timeouts) come from :class:`settings.CloudAccess`, the
    stop action, home volumes, resuming kept VMs and delete_forever from :class:`resume.KeptServer`; a wrong
    configured value is kept out and recorded in ``config_problems`` (:class:`settings.CheckedConfig`)."""

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

    profiles = List(
        Dict(),
        help=f"""
        Named presets offered instead of the size and image lists (like KubeSpawner's `profile_list`).
        Each is a dict: `display_name` (required), `slug` (the value users send; default derived from the
        display name), `description`, `size` and `image` (cloud names, required), `default` (bool), and
        `overrides`: a dict of settings among {", ".join(PROFILE_OVERRIDES)}.
        """,
    ).tag(config=True)

    image_manifest = optional_text(
        """
        Path of the image build manifest (`images/manifest.json`); its images are offered after
        `userserver_images`. See `libcloudspawner.manifest` for the schema.
        """,
    )

    image_manifest_cloud = optional_text(
        "Offer only the manifest's images published to this cloud (a key of their `published` record).",
    )

    userserver_net = optional_text(
        """
        Network (name or id) to attach the instances to. The hub must reach the instances on `port` there.
        Unset: the cloud's default network.
        """,
    )

    userserver_keyname = optional_text("Name of an SSH key pair of the cloud to inject into the instances (optional).")

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

    instance_name_template = Unicode(
        naming.DEFAULT_INSTANCE_NAME_TEMPLATE,
        help="""
        Name of the instances. Fields: `{username}`, `{servername}`, `{hub_id}` (each slugged). A named
        server gets `--{servername}` appended unless the template uses it. Names that needed escaping or
        are too long are hashed, so that they stay valid host names (63 characters) and never collide.
        """,
    ).tag(config=True)

    hub_id = Unicode(
        help="""
        Identity of this hub, set as the `jupyterhub-hub-id` metadata of its instances (the reaper and the
        recovery of lost creates look for it). Default: `hub-` + 12 random hex digits, generated at the first
        start and kept in `libcloudspawner-hub-id` beside the hub's SQLite database (with another database:
        in the hub's working directory), logged at start. Set it explicitly when several hubs share a cloud
        project or the hub's database is not SQLite, and keep it stable.
        """,
    ).tag(config=True)

    @default("hub_id")
    def _default_hub_id(self):
        return hubstate.hub_id(self._state_directory(), self.log)

    forceuser = optional_text(
        """
        Linux user running the server on the instance, for every hub user. Unset: derived from the hub user
        name (used as is when it is a valid, non-system account name; else escaped and hashed).
        """,
    )

    cloudinit_template = optional_text(
        """
        Path of a Jinja2 cloud-config template replacing the packaged `singleuser.yaml.j2`. Rendered with
        StrictUndefined; pass every value through `tojson`. Variables: username, homedir, env_file,
        unit_file, env_path, unit_path, unit_name, default_user (true when a key pair is configured).
        """,
    )

    config_drive = Bool(True, help="Give instances a config drive (cloud-init then needs no metadata service).").tag(
        config=True
    )

    metadata_service_for_server = Bool(
        False,
        help="""
        Let the single-user server's account reach the cloud's metadata service (169.254.169.254,
        fe80::a9fe:a9fe). Off by default: the metadata service hands out the instance's user-data, the server's
        API token included, to any process that asks, so an nftables rule, installed by the server's unit before
        it starts, rejects the account's packets to it (a connection is refused at once). Root keeps access
        (cloud-init uses it when there is no config drive). Needs `nft` in the image (the project's images have
        it; without it the server does not start); set True for images without it or when users' code needs
        the metadata service.
        """,
    ).tag(config=True)

    address_type = Enum(
        ["private_first", "public_first", "private", "public"],
        default_value="private_first",
        help="Which instance address the hub connects to: private first with public fallback (default), etc.",
    ).tag(config=True)

    # ------------------------------------------------------------------------------ lifecycle settings
    port = number(
        8000,
        "Port of the single-user server on the instance (the hub must reach it: open it in the security group).",
    )

    # JupyterHub's own timings, with defaults for VMs (declared again so that --help-all shows these defaults)
    ip = Unicode("0.0.0.0", help="Address the single-user server listens on, on its instance.").tag(config=True)
    start_timeout = number(900, "Seconds a start may take (a VM boots first), including the server's own start.")
    http_timeout = number(60, "Seconds the hub waits for a started server to answer over HTTP before giving up.")
    poll_interval = number(60, "Seconds between two checks that a running server's instance exists.")

    startup_poll_interval_seconds = seconds(
        3.0, "While a server starts, how often its instance state and HTTP endpoint are checked, in seconds."
    )

    stop_timeout_seconds = seconds(
        300.0, "How long stop() waits for the instance to be gone before giving up (it keeps the delete)."
    )

    max_instances = number(
        0,
        """
        Most instances this hub keeps in the cloud project (servers whose state names an instance, plus
        instances whose deletion is still being retried); a start beyond it is refused with HTTP 429 ("this
        hub is full") before any cloud call. 0: no limit. JupyterHub's `active_server_limit`,
        `concurrent_spawn_limit` and `named_server_limit_per_user` apply as well.
        """,
    )

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return choices.apply_user_options

    @default("options_form")
    def _default_options_form(self):
        return UserChoices._render_options_form

    @default("options_from_form")
    def _default_options_from_form(self):
        return UserChoices._options_from_form

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.config_problems:
            self.log.error("LibcloudSpawner configuration: %s", "; ".join(self.config_problems.values()))
        self._progress = ProgressLog(self.log)
        self._background = Background(self.log)
        self._starting = False
        self._settings: CloudSettings | None = None
        self._known_since = 0.0  # an instance from the saved state existed before this process listed anything
        if self._session() is not None:  # in a hub: its id is known (and logged) from the first spawner on
            self.hub_id  # noqa: B018
        with contextlib.suppress(RuntimeError):  # a hub process: retry the deletions an earlier one recorded
            asyncio.get_running_loop().call_soon(self._resume_deletions)
            asyncio.get_running_loop().call_soon(lambda: self._session() is not None and pool.for_spawner(self))

    # ------------------------------------------------------------------------------ helpers
    def _instance_name(self) -> str:
        return naming.instance_name(
            self.instance_name_template, username=self.user.name, servername=self.name or "", hub_id=self.hub_id
        )

    def _tags(self) -> dict[str, str]:
        return naming.instance_tags(hub_id=self.hub_id, username=self.user.name, servername=self.name or "")

    def _client(self) -> CloudClient:
        """The process's client for this hub's cloud settings (built once: reading clouds.yaml is file I/O)."""
        if self._settings is None:
            self._settings = CloudSettings.from_traits(self)
        try:
            return client_for(self._settings, log=self.log)
        except CloudError as e:
            raise errors.configuration(
                "This hub cannot reach its cloud (configuration problem)",
                f"LibcloudSpawner cloud configuration error: {e}",
            ) from None

    def _provisioner(self, client: CloudClient) -> Provisioner:
        return Provisioner(
            client,
            log=self.log,
            log_name=self._log_name,
            poll_interval_seconds=self.startup_poll_interval_seconds,
            stop_timeout_seconds=self.stop_timeout_seconds,
            emit=self._progress.emit,
            ports=bool(self.internal_ssl),
        )

    async def move_certs(self, paths):
        """internal_ssl: the server's key and certificate go to its VM (see ``internal_tls``)."""
        return internal_tls.move_certs(self, paths)

    def _address(self, instance: Instance) -> str | None:
        return address_of(instance, self.address_type)

    async def progress(self):
        """The start's real phases, with percentages (JupyterHub streams these to the spawn page)."""
        async for event in self._progress.stream():
            yield event

    async def get_url(self):
        """The server's URL from the saved instance address (a restarted hub checks it against its DB)."""
        if self.instance_address and self.server is not None:
            return f"{internal_tls.scheme(self)}://{self.instance_address}:{self.port}{self.server.base_url}"
        return await super().get_url()

    def clear_state(self):
        super().clear_state()
        # the hub clears the state right before a new start: forget the last start's progress events,
        # so that an early progress request waits for this start's events instead of replaying old ones
        self._progress.reset()
        self._background.release_late_watch()
        if not self.kept:  # a kept VM (and its token) outlives the server: the next start resumes it
            self._forget_instance()

    # ------------------------------------------------------------------------------ start
    async def start(self):
        self._progress.reset()
        self._progress.log_name = self._log_name
        try:
            self._progress.emit(5, "Checking the server options")
            self._refuse_if_misconfigured()
            selection = self._selection()  # no cloud call before this
            return await self._start_with_deadline(selection)
        finally:
            self._progress.finish()

    async def _start_with_deadline(self, selection: options.Selection) -> str:
        # a deadline a little before the hub's start_timeout, so that the user gets a message saying what was
        # too slow (the hub's own timeout says only "Spawn failed") and cleanup starts
        budget = self.start_timeout - 5 if self.start_timeout >= 20 else None
        try:
            return await asyncio.wait_for(self._start(selection), budget)
        except asyncio.TimeoutError:
            phase = self._progress.last_message
            self.log.warning("Start of %s timed out after %ss (last phase: %s)", self._log_name, budget, phase)
            await self._background.wait_cleanup(CLEANUP_WAIT_SECONDS, self._log_name)
            raise errors.start_timeout(self.start_timeout, phase) from None

    async def _start(self, selection: options.Selection) -> str:
        if self._background.cleaning:
            self._progress.emit(6, "Waiting for the previous attempt's instance to be removed")
            await asyncio.shield(self._background.cleanup)
        provisioner = self._provisioner(self._client())
        try:
            url = await self._resume_kept(provisioner, selection)  # the server's kept VM first
            if url is not None:
                return url
        except (CloudError, resume.KeepError) as e:  # the kept VM stays as it is
            if isinstance(e, resume.KeepError):
                raise errors.cloud_unavailable(
                    "Your kept virtual machine did not come back; please try again in a few minutes.", str(e)
                ) from None
            raise errors.for_user(e, self._log_name) from e
        # a pool VM is booted without the user's home volume, and the server it is handed is not known to
        # come back after a power-off or an unshelve: the pool serves only servers without either
        if not self.home_volume_size_gib and self.stop_action == "delete":
            url = await pool.start_from_pool(self, selection, provisioner)
            if url is not None:  # a VM from the warm pool (None: boot a new one)
                self.booted_image, self.booted_size = selection.image, selection.size
                return url
        return await self._start_fresh(provisioner, selection)

    async def rename(self, old_name, new_name):
        """A named server is renamed (JupyterHub 6, only while it is stopped): its own home volume takes the
        new name, and its kept instance is retagged, so that the next start, the reaper and the recovery of
        lost creates keep recognising them. The instance keeps its name. Refused (nothing renamed) when the
        cloud does not answer."""
        client = self._client()
        try:
            volume_id = await self._rename_home_volume(client, old_name, new_name)
        except HomeVolumeError as e:
            raise errors.for_user(e, self._log_name) from e
        except CloudError as e:
            raise errors.cloud_unavailable(
                "The server's home volume could not be renamed; please try again later.",
                f"Rename of {self._log_name} to {new_name!r}: home volume: {e}",
            ) from None
        if not self.instance_id:
            return
        try:
            await client.update_metadata(self.instance_id, {naming.TAG_SERVER_NAME: naming.metadata_value(new_name)})
        except CloudError as e:
            if volume_id is not None:  # put the volume's name back: the server keeps its old name
                with contextlib.suppress(CloudError, HomeVolumeError):
                    await self._rename_home_volume(client, new_name, old_name)
            raise errors.cloud_unavailable(
                "The server's virtual machine could not be relabelled; please try again later.",
                f"Rename of {self._log_name} to {new_name!r}: {e}",
            ) from None
        self.log.info("Instance %s of %s now tagged as server %r", self.instance_id, self._log_name, new_name)

    # ------------------------------------------------------------------------------ poll / stop
    async def poll(self):
        """None while the instance runs or starts; an exit status once it is gone or broken.

        A cloud API failure is *unknown*, not stopped: it returns None and logs.
        """
        if self._background.cleaning:
            return None  # a failed start is still being cleaned up: let stop() wait for it
        if not self.instance_id:
            return 0
        try:
            client = self._client()
            fleet = fleet_for(client, self.hub_id, self.fleet_refresh_seconds, self.log)
            instance = await fleet.lookup(self.instance_id, self._known_since)
            if instance is None:  # absent from a listing made after it was known: confirm before calling it gone
                instance = await client.get_node(self.instance_id, retries=1)
        except (CloudError, SpawnException) as e:
            self.log.warning(
                "Cannot check instance %s of %s (%s); assuming it still runs", self.instance_id, self._log_name, e
            )
            return None
        if instance == UNKNOWN:
            return None  # no usable listing yet: unknown is not stopped
        if instance is None:
            self.log.info("Instance %s of %s is gone", self.instance_id, self._log_name)
            return 0
        if instance.deleting or instance.state == "terminated":
            self.log.warning("Instance %s of %s is being deleted", self.instance_id, self._log_name)
            self._forget_instance()
            return 0
        if instance.vm_state in resume.WAKE or instance.state == "stopped":
            # powered off behind the hub's back (a guest shutdown, a host reboot): kept, never deleted here;
            # will_resume makes the hub keep the state and token through its stop, the next start powers it on
            if not self.kept:
                self.log.warning("Instance %s of %s is %s; kept for the next start", self.instance_id,
                                 self._log_name, instance.vm_state or instance.state)  # fmt: skip
            self._keep(self.kept or "off")
            return 1
        if instance.state == "error":
            return await self._poll_error(client, instance)
        return None

    async def stop(self, now=False):
        """``stop_action`` ``stop``/``shelve``: park the VM and keep it (will_resume). ``delete``: detach the
        home volume (bounded), delete the instance; idempotent; returns once it is gone (bounded by
        stop_timeout_seconds). An instance the cloud would not delete is recorded and deleted again in the
        background: stop() returns, so that JupyterHub revokes the server's token."""
        await self._background.wait_cleanup(self.stop_timeout_seconds, self._log_name)
        self._background.release_late_watch()
        if not self.instance_id:
            return
        client = self._client()
        if self.stop_action in resume.PARK:
            try:
                await self._keeper(client).park(self.instance_id, self.stop_action)
            except (CloudError, resume.KeepError) as e:
                self.log.error("Could not %s instance %s of %s (%s); it is kept and the next start resumes it",
                               self.stop_action, self.instance_id, self._log_name, e)  # fmt: skip
            self._keep(self.stop_action)
            return
        name = self.instance_name or self._instance_name()
        instance_id = self.instance_id
        # a port the spawner created (internal_ssl) goes once the VM is gone, also when that is in the background
        ports_of_hub = self.hub_id if self.internal_ssl else ""
        try:
            gone = await self._drop_vm(self._provisioner(client), wait=not now)
        except CloudError:
            try:
                self._deletions().record(instance_id, name, self._log_name, client, self.log,
                                         ports_of_hub=ports_of_hub)  # fmt: skip
            except OSError as e:
                raise errors.cloud_unavailable(
                    "Your server's virtual machine could not be deleted right now; please try again later.",
                    f"Could not record the deletion of instance {instance_id} of {self._log_name}: {e}",
                ) from None
        else:
            if not gone and ports_of_hub:
                try:
                    self._deletions().record(instance_id, name, self._log_name, client, self.log,
                                             ports_of_hub=ports_of_hub, why="is not gone yet")  # fmt: skip
                except OSError as e:
                    self.log.error("Could not record instance %s of %s (%s); the reaper will find its port",
                                   instance_id, self._log_name, e)  # fmt: skip
        self._forget_instance()
        self.clear_state()
