"""What a user chose: the options form, one validation, the kept selection and its profile's overrides.

Mixed into ``LibcloudSpawner`` (``self`` is the spawner). A user option travels once: the form only converts
(``_options_from_form``), JupyterHub's ``apply_user_options`` validates against the catalog and keeps the
selection (``select``), ``start()`` uses the kept selection (``_selection``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from traitlets import HasTraits

from . import errors, naming, options
from .catalog import Catalog, CatalogError, cached_catalog
from .settings import PROFILE_OVERRIDES


async def apply_user_options(spawner: Any, user_options: Mapping[str, Any]) -> None:
    """Default ``apply_user_options``: validate strictly (HTTP 400 on anything not offered), keep the
    selection for ``start()``, and apply the chosen profile's overrides now, so that the hub's own start
    deadline sees its ``start_timeout``. A misconfigured hub is refused by ``start()`` instead (JupyterHub logs a
    traceback for any error raised here)."""
    if not spawner.config_problems:
        spawner.select(user_options)


class UserChoices(HasTraits):
    """The spawner's side of the options form and profiles."""

    # the spawner's, declared for readers and type checkers
    userserver_sizes: list
    userserver_images: list
    profiles: list
    image_manifest: str | None
    image_manifest_cloud: str | None
    forceuser: str | None
    user_options: Any
    config_problems: dict[str, str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._selected: tuple[str, options.Selection] | None = None  # (the options it was made from, selection)
        self._profile_saved: dict[str, Any] = {}  # configured values a profile's overrides replaced

    def _refuse_if_misconfigured(self) -> None:
        if self.config_problems:
            raise errors.configuration(
                "This hub's server settings have a problem",
                "LibcloudSpawner configuration: " + "; ".join(self.config_problems.values()),
            )

    def catalog(self) -> Catalog:
        """What users may choose; built once per configuration and manifest version."""
        return cached_catalog(
            self.userserver_sizes,
            self.userserver_images,
            self.profiles,
            PROFILE_OVERRIDES,
            manifest_path=self.image_manifest,
            manifest_cloud=self.image_manifest_cloud,
        )

    @staticmethod
    def _render_options_form(spawner: Any) -> str:
        spawner._refuse_if_misconfigured()
        try:
            catalog = spawner.catalog()
        except CatalogError as e:
            raise errors.configuration("This hub's server choices are misconfigured", f"LibcloudSpawner: {e}") from None
        if not catalog.profiles and len(catalog.sizes) <= 1 and len(catalog.images) <= 1:
            return ""  # nothing to choose: no form
        previous = spawner.orm_spawner.user_options if spawner.orm_spawner is not None else None
        return options.render_form(catalog, previous or spawner.user_options)

    @staticmethod
    def _options_from_form(form_data) -> dict[str, str]:
        """The form only converts; ``apply_user_options`` judges what was sent."""
        try:
            return options.options_from_form(form_data)
        except options.InvalidUserOptions as e:
            raise errors.UserFacingSpawnError(str(e), reason="options", status_code=400) from None

    def validate_options(self, user_options: Any) -> options.Selection:
        """The validated selection for ``user_options``; ``SpawnException`` (HTTP 400) if not offered."""
        try:
            return options.validate_user_options(user_options, self.catalog())
        except options.InvalidUserOptions as e:
            raise errors.invalid_options(str(e)) from None
        except (LookupError, CatalogError) as e:
            raise errors.configuration(
                "This hub's server choices are misconfigured", f"LibcloudSpawner configuration error: {e}"
            ) from None

    def select(self, user_options: Any) -> options.Selection:
        """Validate ``user_options``, keep the selection for ``start()`` and apply its profile's overrides."""
        selection = self.validate_options(user_options)
        self._selected = (json.dumps(user_options, sort_keys=True, default=repr), selection)
        for key, value in self._profile_saved.items():
            setattr(self, key, value)
        self._profile_saved = {}
        for key, value in (selection.profile.overrides if selection.profile else {}).items():
            self._profile_saved[key] = getattr(self, key)
            setattr(self, key, value)
        return selection

    def _selection(self) -> options.Selection:
        """The selection ``apply_user_options`` made for the current ``user_options`` (made now if it did not
        run, e.g. when an administrator replaced it)."""
        current = json.dumps(self.user_options, sort_keys=True, default=repr)
        if self._selected is not None and self._selected[0] == current:
            return self._selected[1]
        return self.select(self.user_options)

    def _reapply_profile(self) -> None:
        """A restarted hub builds the spawner of a running or kept server from the database: its profile's
        overrides (``stop_action``, the home volume...) must hold for the stop and the poll that follow, as they
        did when it started."""
        try:
            self.select(self.user_options)
        except Exception as e:  # a profile removed from the configuration since: the hub-wide settings apply
            self.log.warning("Server %s: its options %s no longer select a profile (%s); the hub-wide settings apply",
                             self._log_name, self.user_options, e)  # fmt: skip

    @property
    def linux_user(self) -> str:
        """The account running the server: ``forceuser``, else derived from the hub user's name, never one of
        the accounts the manifest records for the chosen image."""
        if self.forceuser:
            return self.forceuser
        return naming.linux_username(self.user.name, reserved=self.catalog().image_accounts(self._selection().image))
