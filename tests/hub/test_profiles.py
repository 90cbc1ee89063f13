"""Profiles (radio cards), credentials from clouds.yaml, security groups and extra metadata, in a real hub."""

from __future__ import annotations

import re

import pytest
import yaml

from testkit.hub import PASSWORD, cloud_servers, running_hub

pytestmark = pytest.mark.hub

PROFILES = [
    {"display_name": "Small Python", "slug": "small", "size": "m1.small", "image": "debian-12-jupyter",
     "description": "1 vCPU, 2 GB"},
    {"display_name": "Medium R", "slug": "medium-r", "size": "m1.medium", "image": "debian-12-jupyter",
     "default": True, "overrides": {"instance_metadata": {"course": "r101"}}},
]  # fmt: skip


@pytest.fixture(scope="module")
def hub(tmp_path_factory, double):
    workdir = tmp_path_factory.mktemp("hubprofiles")
    clouds = workdir / "clouds.yaml"
    clouds.write_text(
        yaml.safe_dump(
            {
                "clouds": {
                    "double": {
                        "auth": {
                            "auth_url": double.url + "/v3",
                            "username": "jupyter",
                            "password": PASSWORD,
                            "project_name": "jupyter",
                            "user_domain_name": "Default",
                            "project_domain_id": "default",
                        },
                        "region_name": "RegionOne",
                    }
                }
            }
        )
    )
    config = {
        "clouds_yaml_cloud": "double",
        "clouds_yaml_path": str(clouds),
        "userserver_net": "flatnet",
        "security_groups": ["default"],
        "profiles": PROFILES,
    }
    with running_hub(workdir, double, config) as h:
        yield h


def test_form_shows_profiles_as_radio_cards(hub):
    page = hub.login("pat").get(f"{hub.url}/hub/spawn", timeout=10)
    assert page.status_code == 200
    radios = re.findall(r'type="radio" name="profile" id="[^"]+" value="([^"]+)"( checked)?', page.text)
    assert radios == [("small", ""), ("medium-r", " checked")]
    assert "1 vCPU, 2 GB" in page.text


@pytest.mark.parametrize("options", [{"profile": "gpu"}, {"size": "m1.small"}, {"profile": "small", "image": "x"}])
def test_profiles_refuse_anything_else(hub, double, options):
    hub.create_user("pat")
    before = double.client.call_counts()["total"]
    r = hub.api("POST", "/users/pat/server", json=options)
    assert r.status_code == 400, r.text
    assert double.client.call_counts()["total"] == before


def test_profile_spawn_applies_its_overrides(hub, double):
    hub.create_user("rob")
    r = hub.api("POST", "/users/rob/server", json={"profile": "medium-r"})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("rob")
    [server] = cloud_servers(double, user="rob")
    assert server["flavor"] == "m1.medium"
    assert server["metadata"]["course"] == "r101"
    assert hub.through_proxy("rob").status_code == 200
    assert hub.api("DELETE", "/users/rob/server").status_code in (202, 204)
    hub.wait_gone("rob")
    assert not cloud_servers(double, user="rob")
