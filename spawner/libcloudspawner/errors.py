"""User-facing errors: what the user reads on the spawn page, and the detail that goes to the hub's log.

Every error a start can raise ends up here as a :class:`UserFacingSpawnError`: its ``message`` is safe to
show (no cloud error body, no instance id), its ``log_message`` says what to fix. JupyterHub 6's
``SpawnException`` is a ``tornado.web.HTTPError``, so the same object also answers a REST request with its
status and re-renders the spawn form with its message.
"""

from __future__ import annotations

from jupyterhub.spawner import SpawnException

from .cloud import CloudConfigError, CloudError, CloudNotFound, describe
from .volumes import HomeVolumeError

TELL_ADMIN = "please tell the administrator."


class UserFacingSpawnError(SpawnException):
    """A SpawnException whose ``message`` is what the user reads. JupyterHub 6 shows a failed spawn's
    ``str(exception)`` on the spawn page, which carries the ``log_message`` (cloud error bodies, instance ids),
    unless the exception has a ``jupyterhub_message``: this class provides it."""

    @property
    def jupyterhub_message(self) -> str:
        return self.message


def invalid_options(detail: str) -> UserFacingSpawnError:
    """The user asked for something the administrator did not offer (HTTP 400, no cloud call made)."""
    return UserFacingSpawnError(f"Invalid server options: {detail}", reason="options", status_code=400)


def configuration(user_message: str, log_message: str, reason: str = "config") -> UserFacingSpawnError:
    """The administrator's configuration is wrong: the user is told to report it, the log says what."""
    return UserFacingSpawnError(
        f"{user_message}; {TELL_ADMIN}", reason=reason, status_code=500, log_message=log_message
    )


def invalid_environment(key: str, log_message: str) -> UserFacingSpawnError:
    """An environment variable systemd would drop (a control character): refused before any cloud call."""
    return configuration(
        f"The server's environment variable {key} contains a control character, so it could not be passed on",
        log_message,
        reason="environment",
    )


def hub_full(max_instances: int) -> UserFacingSpawnError:
    """The hub keeps as many instances as ``max_instances`` allows (HTTP 429, no cloud call made)."""
    return UserFacingSpawnError(
        f"This hub is full: it already keeps its maximum of {max_instances} servers' virtual machines."
        " Please try again later, once other servers have stopped.",
        reason="hub-full",
        status_code=429,
    )


def start_timeout(seconds: float, phase: str) -> UserFacingSpawnError:
    return UserFacingSpawnError(
        f"Your server did not start within {seconds:.0f} seconds (last step: {phase})."
        " Please try again; if it keeps happening, tell the administrator.",
        reason="timeout",
        status_code=504,
    )


def instance_gone(message: str) -> UserFacingSpawnError:
    return UserFacingSpawnError(message, reason="instance-gone", status_code=503)


def instance_error(fault: str | None, log_message: str) -> UserFacingSpawnError:
    return UserFacingSpawnError(
        "The cloud could not start your server's virtual machine"
        + (f": {fault.strip()}" if fault else ".")
        + " Try another size or image, or tell the administrator.",
        reason="instance-error",
        status_code=503,
        log_message=log_message,
    )


def cloud_unavailable(user_message: str, log_message: str | None = None) -> UserFacingSpawnError:
    return UserFacingSpawnError(user_message, reason="cloud", status_code=503, log_message=log_message)


def for_user(e: BaseException, log_name: str) -> BaseException:
    """The error a failed start shows its user: a SpawnException as it is, a cloud error classified
    (the administrator's configuration, refused credentials, an outage, a refusal by the cloud), anything else
    unchanged."""
    if isinstance(e, SpawnException):
        return e
    if isinstance(e, HomeVolumeError):
        status = 409 if e.reason in ("attached-elsewhere", "duplicate") else 503
        return UserFacingSpawnError(e.user_message, reason=f"home-volume-{e.reason}", status_code=status,
                                    log_message=str(e))  # fmt: skip
    if isinstance(e, CloudNotFound):  # names only what the administrator configured
        text = str(e)
        return configuration(text[:1].upper() + text[1:], f"LibcloudSpawner configuration: {e}")
    if isinstance(e, CloudConfigError):
        return configuration("This hub's cloud settings are wrong", f"LibcloudSpawner configuration: {e}")
    if isinstance(e, CloudError) and e.status == 401:
        return configuration(
            "The hub's cloud credentials were refused", f"Cloud credentials refused while starting {log_name}: {e}"
        )
    if isinstance(e, CloudError):
        message = (
            "The cloud is not answering right now; please try again in a few minutes."
            if e.transient
            else f"The cloud refused to create your server: {describe(e)}"
        )
        return cloud_unavailable(message, f"Cloud error starting {log_name}: {e}")
    return e
