"""The pre-flight's network posture: a security group that lets its members (or another group's) reach the
server's port lets one user's VM reach another user's server. Checked through the real libcloud driver against
the API double, whose groups carry the rules Neutron lists (the project's ``default`` group as the dev cloud
records it: any traffic from its own members)."""

from __future__ import annotations

import pytest

from libcloudspawner.check import cloud_findings
from libcloudspawner.spawner import LibcloudSpawner
from testkit.osdouble.catalogue import DEFAULT_GROUP_ID, EGRESS_RULES, member_rules, rule

HOST_ONLY = rule("ingress", "IPv4", "tcp", 8000, "10.99.0.1/32")
SERVER_GROUP = {"name": "jupyter-server", "rules": [*EGRESS_RULES, HOST_ONLY]}
DEFAULT_GROUP = {"id": DEFAULT_GROUP_ID, "name": "default", "rules": [*EGRESS_RULES, *member_rules(DEFAULT_GROUP_ID)]}
# a group that opens 8000-8999 to the members of the default group
PEER_GROUP = {
    "name": "peers",
    "rules": [
        rule("ingress", "IPv4", "tcp", None, None, DEFAULT_GROUP_ID) | {"port_range_min": 8000, "port_range_max": 8999}
    ],
}
SSH_PEERS = {"name": "ssh-peers", "rules": [rule("ingress", "IPv4", "tcp", 22, None, DEFAULT_GROUP_ID)]}


@pytest.fixture
def groups(default):
    default.client.set_catalogue(security_groups=[DEFAULT_GROUP, SERVER_GROUP, PEER_GROUP, SSH_PEERS])
    return default


def spawner(double, **traits) -> LibcloudSpawner:
    params = {"arg_user_id": "jupyter", "arg_key": "secret", "ex_force_auth_version": "3.x_password",
              "ex_force_auth_url": double.url, "ex_force_service_region": "RegionOne", "ex_tenant_name": "jupyter",
              "ex_domain_name": "Default"}  # fmt: skip
    return LibcloudSpawner(libcloudparams=params, userserver_sizes=[("Small", "m1.small")],
                           userserver_images=[("Debian", "debian-12-jupyter")], hub_id="unit", **traits)  # fmt: skip


def posture(findings, what: str):
    (found,) = [f for f in findings if f.what == what]
    return found


@pytest.mark.parametrize(
    ("group", "ok"),
    [("jupyter-server", True), ("default", False), ("peers", False), ("ssh-peers", True)],
    ids=["host-only", "default-members", "peers-on-the-port", "peers-on-another-port"],
)
async def test_a_group_letting_other_vms_reach_the_port_is_a_problem(groups, group, ok):
    found = posture(await cloud_findings(spawner(groups, security_groups=[group])), f"security group {group!r} posture")
    assert found.ok is ok, found
    if not ok:
        assert f"members of group {DEFAULT_GROUP_ID} reach port 8000" in found.detail
        assert "Network posture" in found.fix


async def test_no_group_means_the_default_group_and_it_is_checked(groups):
    found = posture(await cloud_findings(spawner(groups)), "security_groups")
    assert not found.ok
    assert found.detail.startswith("not set: the VMs get the project's default group: members of group")


async def test_the_port_setting_is_the_one_checked(groups):
    found = posture(await cloud_findings(spawner(groups, security_groups=["peers"], port=9000)),
                    "security group 'peers' posture")  # fmt: skip
    assert found.ok, found
