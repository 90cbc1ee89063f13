"""What the hub keeps of a server: the state JupyterHub stores in its database, saved early during a start,
and the hub's own records beside that database (the deletions still to retry).

Mixed into ``LibcloudSpawner`` (``self`` is the spawner).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jupyterhub.spawner import SpawnException
from traitlets import HasTraits, Unicode

from . import deletions, hubstate


class ServerState(HasTraits):
    """The instance a server runs on, as JupyterHub's ``get_state``/``load_state`` keep it."""

    instance_id = Unicode(None, allow_none=True)
    instance_name = Unicode(None, allow_none=True)
    instance_address = Unicode(None, allow_none=True)
    kept = Unicode(None, allow_none=True)  # how the VM was kept at the last stop (see resume)
    booted_image = Unicode(None, allow_none=True)
    booted_size = Unicode(None, allow_none=True)
    volume_id = Unicode(None, allow_none=True)

    # the spawner's, declared for readers and type checkers
    will_resume: bool
    user_options: Any
    orm_spawner: Any
    log: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept_token = ""  # the API token the kept VM's server holds
        self._fault: str | None = None  # the cloud's reason for an instance found in ERROR

    def get_state(self):
        state = super().get_state()
        if self.instance_id:
            state["instance_id"] = self.instance_id
            state["instance_name"] = self.instance_name
            state["address"] = self.instance_address
            state["image"], state["size"] = self.booted_image, self.booted_size
        if self.instance_id and self.kept:
            state["kept"] = self.kept
            state["api_token"] = self._kept_token
        if self.volume_id:
            state["volume_id"] = self.volume_id
        if self._fault:
            state["fault"] = self._fault
        return state

    def load_state(self, state):
        super().load_state(state)
        self.instance_id = state.get("instance_id")
        self.instance_name = state.get("instance_name")
        self.instance_address = state.get("address")
        self.booted_image, self.booted_size = state.get("image"), state.get("size")
        self.kept = state.get("kept")
        self._kept_token = state.get("api_token") or ""
        self.volume_id = state.get("volume_id")
        self._fault = state.get("fault")
        self.will_resume = bool(self.instance_id and self.kept)
        if self.instance_id and self.user_options:
            self._reapply_profile()

    def _persist_state(self) -> None:
        """Save the state now, not only after start() returns: a hub that crashes mid-spawn then finds
        the instance at restart (poll/get_url), adopts it if it answers, and stops it otherwise."""
        session = self._session()
        if self.orm_spawner is None or session is None:
            return
        try:
            self.orm_spawner.state = self.get_state()
            session.commit()
        except Exception:
            self.log.exception("Could not save the state of %s early", self._log_name)

    def _forget_instance(self) -> None:
        self.instance_id = None
        self.instance_name = None
        self.instance_address = None
        self.booted_image = self.booted_size = None
        self.kept = None
        self._kept_token = ""
        self.will_resume = False

    # ------------------------------------------------------------------------------ beside the hub's database
    def _session(self):
        """The hub's database session: the one given to this spawner, else the session of its server's record
        (reading JupyterHub's deprecated ``Spawner.db`` default logs a deprecation warning each time)."""
        if self.trait_has_value("db"):
            return self.db
        if self.orm_spawner is None:
            return None
        from sqlalchemy.orm import object_session

        return object_session(self.orm_spawner)

    def _state_directory(self) -> Path:
        bind = getattr(self._session(), "bind", None)
        return hubstate.state_directory(bind.url if bind is not None else None)

    def _deletions(self) -> deletions.DurableDeletions:
        """The hub's record of deletions to retry (beside its database)."""
        return deletions.for_directory(self._state_directory())

    def _resume_deletions(self) -> None:
        try:
            self._deletions().resume(self._client(), self.log)
        except SpawnException as e:
            self.log.error("Cannot retry recorded deletions: %s", e.log_message or e)
