"""Cloud credentials and driver arguments: ``libcloudparams``, a clouds.yaml entry, or ``OS_*`` variables.

No libcloud import here: this builds the arguments; ``cloud.py`` makes the driver. The result hides its
secret from ``repr`` so that it can never end up in a log by accident.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

#: keys of libcloudparams that are positional driver arguments in the original configuration
POSITIONAL_KEYS = {"arg_user_id": "key", "arg_key": "secret"}
#: libcloudparams values never to log
SECRET_PARAM_KEYS = frozenset({"arg_key", "ex_force_auth_token", "secret", "password"})


class CredentialsError(ValueError):
    """No usable credentials, or a clouds.yaml / OS_* configuration libcloud cannot use."""


@dataclass(frozen=True)
class DriverArguments:
    """Everything needed to build a driver: ``get_driver(provider)(key, secret, **kwargs)``."""

    provider: str
    key: str | None
    secret: str | None = field(repr=False)
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    source: str = "libcloudparams"
    ca_bundle: str | None = None

    def fingerprint(self) -> str:
        """A stable identity of these arguments (for sharing one client), secret included only hashed."""
        h = hashlib.sha256()
        for part in (self.provider, self.key or "", self.secret or "", self.ca_bundle or ""):
            h.update(part.encode("utf-8", "surrogatepass") + b"\0")
        for k in sorted(self.kwargs):
            h.update(f"{k}={self.kwargs[k]!r}\0".encode("utf-8", "surrogatepass"))
        return h.hexdigest()

    def safe_summary(self) -> dict[str, Any]:
        """What may be logged: no secret, no token."""
        shown = {k: v for k, v in self.kwargs.items() if k not in SECRET_PARAM_KEYS}
        return {"provider": self.provider, "user": self.key, "source": self.source, **shown}


def _strip_v3(auth_url: str) -> str:
    """libcloud appends ``/v3/auth/tokens`` itself: give it the Keystone root."""
    url = auth_url.rstrip("/")
    for suffix in ("/v3", "/v2.0"):
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url


def from_libcloudparams(params: Mapping[str, Any], provider: str) -> DriverArguments | None:
    """The original configuration: ``arg_user_id``/``arg_key`` and ``ex_*`` (and other) driver kwargs.

    ``arg_<name>`` other than those two become keyword ``<name>`` (``arg_secure`` -> ``secure``).
    Returns ``None`` when the parameters carry no credentials (then clouds.yaml or ``OS_*`` are used).
    """
    key = params.get("arg_user_id")
    secret = params.get("arg_key")
    kwargs: dict[str, Any] = {}
    for name, value in params.items():
        if name in POSITIONAL_KEYS:
            continue
        kwargs[name[4:] if name.startswith("arg_") else name] = value
    if key is None and secret is None and "ex_force_auth_token" not in kwargs:
        return None
    return DriverArguments(provider=provider, key=key, secret=secret, kwargs=kwargs)


def from_openstack_config(
    cloud: str | None,
    *,
    clouds_yaml_path: str | None = None,
    provider: str = "openstack",
    extra: Mapping[str, Any] | None = None,
) -> DriverArguments:
    """Credentials of a clouds.yaml entry (``cloud``), or of the ``OS_*`` environment (``cloud=None``).

    Uses openstacksdk's loader (``openstack.config``), so the files, profiles and variables are read
    exactly as the ``openstack`` CLI reads them. Password and application-credential auth are supported.
    """
    try:
        import openstack.config as os_config
        from openstack import exceptions as os_exceptions
    except ImportError:
        raise CredentialsError(
            "reading clouds.yaml or OS_* variables needs openstacksdk: pip install openstacksdk"
            " (or set LibcloudSpawner.libcloudparams with arg_user_id/arg_key)"
        ) from None
    try:
        loader = os_config.OpenStackConfig(
            config_files=[clouds_yaml_path] if clouds_yaml_path else None,
            load_envvars=cloud is None,
        )
        if cloud is None:
            if "envvars" not in loader.get_cloud_names():
                raise CredentialsError(
                    "no cloud credentials: set LibcloudSpawner.libcloudparams (arg_user_id, arg_key, ex_*),"
                    " LibcloudSpawner.clouds_yaml_cloud, or the OS_* variables (OS_AUTH_URL, ...)"
                )
            region = loader.get_one(cloud="envvars")
            source = "OS_* environment variables"
        else:
            region = loader.get_one(cloud=cloud)
            source = f"clouds.yaml entry {cloud!r}"
    except os_exceptions.ConfigException as e:
        raise CredentialsError(f"cannot read the OpenStack configuration: {e}") from e
    config = region.config
    auth = dict(config.get("auth") or {})
    auth_type = (config.get("auth_type") or "password").replace("-", "").lower()
    auth_url = auth.get("auth_url")
    if not auth_url:
        raise CredentialsError(f"{source} has no auth_url")
    kwargs: dict[str, Any] = {"ex_force_auth_url": _strip_v3(auth_url)}
    if auth_type in ("password", "v3password"):
        key, secret = auth.get("username"), auth.get("password")
        if not key or not secret:
            raise CredentialsError(f"{source}: password auth needs username and password")
        kwargs["ex_force_auth_version"] = "3.x_password"
        kwargs["ex_domain_name"] = auth.get("user_domain_name") or auth.get("domain_name") or "Default"
        project = auth.get("project_name") or auth.get("tenant_name")
        if project:
            kwargs["ex_tenant_name"] = project
        kwargs["ex_tenant_domain_id"] = auth.get("project_domain_id") or "default"
    elif auth_type in ("v3applicationcredential", "applicationcredential"):
        key, secret = auth.get("application_credential_id"), auth.get("application_credential_secret")
        if not key or not secret:
            raise CredentialsError(
                f"{source}: application credential auth needs application_credential_id and"
                " application_credential_secret (the name-based form is not supported by libcloud)"
            )
        kwargs["ex_force_auth_version"] = "3.x_appcred"
    else:
        raise CredentialsError(
            f"{source}: auth_type {auth_type!r} is not supported (use password or v3applicationcredential)"
        )
    if region.region_name:
        kwargs["ex_force_service_region"] = region.region_name
    kwargs.update(extra or {})
    return DriverArguments(
        provider=provider,
        key=key,
        secret=secret,
        kwargs=kwargs,
        source=source,
        ca_bundle=config.get("cacert") or None,
    )


def driver_arguments(
    libcloudparams: Mapping[str, Any],
    *,
    provider: str = "openstack",
    region: str | None = None,
    api_version: str | None = None,
    timeout_seconds: float | None = None,
    clouds_yaml_cloud: str | None = None,
    clouds_yaml_path: str | None = None,
) -> DriverArguments:
    """Choose the credentials source and complete the driver kwargs.

    Order: ``libcloudparams`` when it carries credentials; else the clouds.yaml entry if one is named;
    else the ``OS_*`` variables (OpenStack only). ``cloud_region`` fills ``ex_force_service_region`` and
    the OpenStack ``api_version`` is ``api_version`` unless ``libcloudparams`` sets its own.
    """
    args = from_libcloudparams(libcloudparams, provider)
    if args is None:
        if provider.lower() != "openstack":
            raise CredentialsError(
                f"no credentials for provider {provider!r}: set LibcloudSpawner.libcloudparams"
                " (arg_user_id, arg_key and the driver's ex_* arguments)"
            )
        extra = {k: v for k, v in libcloudparams.items() if k not in POSITIONAL_KEYS}
        args = from_openstack_config(
            clouds_yaml_cloud, clouds_yaml_path=clouds_yaml_path, provider=provider, extra=extra
        )
    kwargs = dict(args.kwargs)
    if provider.lower() == "openstack":
        if region and "ex_force_service_region" not in kwargs:
            kwargs["ex_force_service_region"] = region
        if api_version and "api_version" not in kwargs:
            kwargs["api_version"] = api_version
    elif region and "region" not in kwargs:
        kwargs["region"] = region
    if timeout_seconds and "timeout" not in kwargs:
        kwargs["timeout"] = timeout_seconds
    return replace(args, kwargs=kwargs)
