"""The pre-flight command against the real dev cloud: `libcloudspawner-check --config jupyterhub_config.py` finds
each mistake an administrator can make about the cloud, with its fix, and passes the documented configuration."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import doc_config, doc_libcloudparams

HUB_CONNECT = "c.JupyterHub.hub_connect_url = 'http://10.99.0.1:8081'\n"


def write_config(path: Path, spawner: dict, extra: str = HUB_CONNECT) -> Path:
    lines = [f"c.LibcloudSpawner.{name} = {value!r}" for name, value in spawner.items()]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["libcloudspawner-check", "--config", str(path)], capture_output=True, text=True, timeout=300, check=False
    )


def test_the_documented_configuration_passes(tmp_path, facts, image, ssh_key):
    group = facts["server_security_group"]
    config = {**doc_config(facts, image), "userserver_keyname": ssh_key["name"], "security_groups": [group]}
    r = check(write_config(tmp_path / "jupyterhub_config.py", config))
    assert r.returncode == 0, r.stdout + r.stderr
    for found in ("size 'j1.small'", f"image {image['image_name']!r}", f"network {facts['network']!r}",
                  f"key pair {ssh_key['name']!r}", f"security group {group!r}", f"security group {group!r} posture",
                  "hub URL for VMs"):  # fmt: skip
        assert f"ok       {found}" in r.stdout, r.stdout


@pytest.mark.parametrize(
    ("mistake", "shown"),
    [
        ({"userserver_keyname": "lcs-no-such-key"}, "PROBLEM  key pair 'lcs-no-such-key'"),
        ({"security_groups": ["lcs-no-such-group"]}, "PROBLEM  security group 'lcs-no-such-group'"),
        ({"security_groups": ["default"]}, "PROBLEM  security group 'default' posture"),
        ({"userserver_sizes": [("Huge", "lcs-no-such-flavor")]}, "PROBLEM  size 'lcs-no-such-flavor'"),
        ({"userserver_net": "lcs-no-such-net"}, "PROBLEM  network 'lcs-no-such-net'"),
        ({"libcloud_provider": "nosuchprovider"}, "PROBLEM  libcloud_provider"),
        ({"instance_name_template": "jupyter-{user}"}, "PROBLEM  instance_name_template"),
    ],
    ids=["key-pair", "security-group", "default-group-posture", "flavor", "network", "provider", "template"],
)
def test_each_mistake_is_found_with_its_fix(tmp_path, facts, image, mistake, shown):
    r = check(write_config(tmp_path / "jupyterhub_config.py", {**doc_config(facts, image), **mistake}))
    assert r.returncode == 1
    assert shown in r.stdout, r.stdout


def test_a_region_the_cloud_lacks_is_named(tmp_path, facts, image):
    params = {**doc_libcloudparams(facts), "ex_force_service_region": "RegionTwo"}
    r = check(write_config(tmp_path / "jupyterhub_config.py", {**doc_config(facts, image), "libcloudparams": params}))
    assert r.returncode == 1
    assert "no endpoint for this region" in r.stdout, r.stdout


def test_a_hub_url_the_vms_cannot_reach_is_named(tmp_path, facts, image):
    r = check(write_config(tmp_path / "jupyterhub_config.py", doc_config(facts, image), extra=""))
    assert r.returncode == 1
    assert "PROBLEM  hub URL for VMs" in r.stdout and "hub_connect_url" in r.stdout


def test_the_dev_clouds_example_configuration_passes(facts):
    """`invoke devcloud up` writes an example hub configuration: everything it offers exists in the dev cloud."""
    r = check(Path(facts["hub_config"]))
    assert r.returncode == 0, r.stdout + r.stderr
