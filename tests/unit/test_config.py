"""Credentials and driver arguments: libcloudparams (the original lines), clouds.yaml, OS_* variables."""

from __future__ import annotations

import pytest
import yaml

from libcloudspawner.config import CredentialsError, driver_arguments

ORIGINAL = {
    "arg_user_id": "lops-jupyter",
    "arg_key": "secret",
    "ex_force_auth_version": "3.x_password",
    "ex_force_auth_url": "https://openstack.server.com:5000",
    "ex_force_service_region": "RegionOne",
    "ex_tenant_name": "noo-lops-jupyter",
    "ex_domain_name": "default",
}


def test_original_libcloudparams_map_to_driver_arguments():
    args = driver_arguments(ORIGINAL, api_version="2.0", timeout_seconds=30)
    assert (args.key, args.secret) == ("lops-jupyter", "secret")
    assert args.kwargs == {
        "ex_force_auth_version": "3.x_password",
        "ex_force_auth_url": "https://openstack.server.com:5000",
        "ex_force_service_region": "RegionOne",
        "ex_tenant_name": "noo-lops-jupyter",
        "ex_domain_name": "default",
        "api_version": "2.0",
        "timeout": 30,
    }


@pytest.mark.parametrize(
    ("params", "key", "value"),
    [
        ({**ORIGINAL, "api_version": "1.1"}, "api_version", "1.1"),  # libcloudparams wins
        ({k: v for k, v in ORIGINAL.items() if k != "ex_force_service_region"}, "ex_force_service_region", "R2"),
        ({**ORIGINAL, "arg_secure": False}, "secure", False),
    ],
)
def test_settings_complete_but_never_override_libcloudparams(params, key, value):
    args = driver_arguments(params, region="R2", api_version="2.0")
    assert args.kwargs[key] == value


def test_secret_never_in_repr_or_summary():
    args = driver_arguments(ORIGINAL)
    assert "secret" not in repr(args)
    assert "secret" not in repr(args.safe_summary())


def _clouds(tmp_path, entry):
    path = tmp_path / "clouds.yaml"
    path.write_text(yaml.safe_dump({"clouds": {"c": entry}}))
    return str(path)


def test_clouds_yaml_password(tmp_path):
    path = _clouds(
        tmp_path,
        {
            "auth": {"auth_url": "https://keystone:5000/v3", "username": "u", "password": "pw", "project_name": "p",
                     "user_domain_name": "Default", "project_domain_id": "default"},
            "region_name": "RegionOne",
            "cacert": "/etc/ssl/private-ca.pem",
        },
    )  # fmt: skip
    args = driver_arguments({}, clouds_yaml_cloud="c", clouds_yaml_path=path, api_version="2.0")
    assert (args.key, args.secret, args.ca_bundle) == ("u", "pw", "/etc/ssl/private-ca.pem")
    assert args.kwargs["ex_force_auth_url"] == "https://keystone:5000"
    assert args.kwargs["ex_force_auth_version"] == "3.x_password"
    assert args.kwargs["ex_tenant_name"] == "p"
    assert args.kwargs["ex_force_service_region"] == "RegionOne"
    assert args.source == "clouds.yaml entry 'c'"


def test_clouds_yaml_application_credential(tmp_path):
    path = _clouds(
        tmp_path,
        {
            "auth_type": "v3applicationcredential",
            "auth": {"auth_url": "https://keystone:5000/v3", "application_credential_id": "id1",
                     "application_credential_secret": "s3cret"},
        },
    )  # fmt: skip
    args = driver_arguments({}, clouds_yaml_cloud="c", clouds_yaml_path=path)
    assert (args.key, args.secret, args.kwargs["ex_force_auth_version"]) == ("id1", "s3cret", "3.x_appcred")


def test_os_environment_variables(monkeypatch, tmp_path):
    for name, value in {
        "OS_AUTH_URL": "http://127.0.0.1:5000/v3", "OS_USERNAME": "jupyter", "OS_PASSWORD": "pw",
        "OS_PROJECT_NAME": "jupyter", "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_ID": "default",
        "OS_REGION_NAME": "RegionOne", "OS_CLIENT_CONFIG_FILE": str(tmp_path / "none.yaml"),
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    args = driver_arguments({})
    assert (args.key, args.secret) == ("jupyter", "pw")
    assert args.source == "OS_* environment variables"


def test_no_credentials_at_all_is_a_clear_error(monkeypatch, tmp_path):
    for name in list(__import__("os").environ):
        if name.startswith("OS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(CredentialsError, match="no cloud credentials"):
        driver_arguments({})


def test_other_providers_need_libcloudparams():
    with pytest.raises(CredentialsError, match="provider 'ec2'"):
        driver_arguments({}, provider="ec2")


def test_ca_bundle_keeps_verification_on(tmp_path):
    import libcloud.security

    from libcloudspawner.cloud import make_driver_factory

    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    saved = libcloud.security.CA_CERTS_PATH
    try:
        args = driver_arguments(ORIGINAL)
        factory = make_driver_factory(type(args)(**{**args.__dict__, "ca_bundle": str(bundle)}))
        factory()  # the first driver (built in a worker thread in real use) applies the setting
        assert libcloud.security.VERIFY_SSL_CERT is True
        assert libcloud.security.CA_CERTS_PATH == str(bundle)
    finally:
        libcloud.security.CA_CERTS_PATH = saved
