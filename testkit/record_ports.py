"""Record, on the dev cloud, the Neutron port exchanges of a server booted on a port created first.

    .venv/bin/python -m testkit.record_ports --out testkit/osdouble/recordings/ports

The calls are the ones the spawner makes with ``internal_ssl`` (libcloud's ``OpenStack_2_NodeDriver``, through
its own connections): ``POST /v2.0/ports`` with name, description, network and security groups; the list by
name and description; ``POST /v2.1/servers`` with ``networks: [{"port": id}]``; the server ACTIVE with the
port's address; the port bound; ``DELETE`` of the server and the port kept, unbound; ``DELETE`` of the port,
then 404s; and two refused creates (unknown network, unknown security group). One server, deleted at the end
with its port whatever happens. Tokens are ``<TOKEN>``, the password ``<PASSWORD>``, Nova's ``adminPass``
``<ADMIN_PASS>``; the user-data is an empty cloud-config.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
import uuid
from pathlib import Path

from libcloud.compute.base import Node
from libcloud.compute.providers import Provider, get_driver

from testkit.recording import LibcloudRecorder

STATE = Path(__file__).resolve().parents[1] / "devcloud" / "out" / "state.json"
DESCRIPTION = "jupyterhub-managed-by=libcloudspawner jupyterhub-hub-id=hub-recording"


def _driver(facts: dict, password: str):
    cls = get_driver(Provider.OPENSTACK)
    return cls(facts["user"], password, ex_force_auth_version=facts["auth_version"],
               ex_force_auth_url=facts["auth_url"], ex_force_service_region=facts["region"],
               ex_tenant_name=facts["project"], ex_domain_name="Default", api_version="2.0")  # fmt: skip


def record(out: Path, image_name: str, flavor_name: str) -> None:
    facts = json.loads(STATE.read_text())
    password = os.environ.get(facts["password_env"], facts.get("password_default", "secret"))
    rec = LibcloudRecorder(out, secrets={password: "<PASSWORD>"})
    driver = _driver(facts, password)
    name = f"rec-port-{uuid.uuid4().hex[:6]}"
    port_id = server_id = None
    with rec.wrapping():
        rec.label("ex_list_networks", "Neutron networks (the port's network by name)")
        network = next(n for n in driver.ex_list_networks() if n.name == facts["network"])
        rec.label("ex_list_security_groups", "security groups (the port's group by name)")
        group = next(g for g in driver.ex_list_security_groups() if g.name == facts["server_security_group"])
        rec.label("list_images", "Glance images (the image to boot)")
        image = next(i for i in driver.list_images() if i.name == image_name)
        rec.label("list_sizes", "Nova flavors")
        size = next(s for s in driver.list_sizes() if s.name == flavor_name)
        try:
            rec.label("create_port", "POST /v2.0/ports with name, description, network and security group")
            body = {"port": {"name": name, "description": DESCRIPTION, "network_id": network.id,
                             "security_groups": [group.id], "admin_state_up": True}}  # fmt: skip
            port = driver.network_connection.request("/v2.0/ports", method="POST", data=body).object["port"]
            port_id = port["id"]
            rec.label("list_ports", "GET /v2.0/ports filtered by name and description")
            driver.network_connection.request("/v2.0/ports", params={"name": name, "description": DESCRIPTION})
            rec.label("create_node", "POST /v2.1/servers with networks [{port}] (no security_groups), then GET")
            params = driver._create_args_to_params(None, name=name, size=size, image=image,
                                                   ex_userdata="#cloud-config\n{}\n", ex_config_drive=True,
                                                   ex_metadata={"jupyterhub-hub-id": "hub-recording"})  # fmt: skip
            params["networks"] = [{"port": port_id}]
            created = driver.connection.request("/servers", method="POST", data={"server": params}).object
            server_id = created["server"]["id"]
            driver.connection.request(f"/servers/{server_id}")
            rec.label("ex_get_node_details", "poll the server until ACTIVE (address from the port)")
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                node = driver.ex_get_node_details(server_id)
                if node is not None and node.state in ("running", "error"):
                    break
                time.sleep(3)
            rec.label("get_port", "the port bound to the server (device_id, device_owner, status)")
            driver.network_connection.request(f"/v2.0/ports/{port_id}")
            rec.label("destroy_node", "DELETE the server")
            driver.destroy_node(Node(id=server_id, name=None, state=None, public_ips=[], private_ips=[],
                                     driver=driver))  # fmt: skip
            rec.label("ex_get_node_details", "poll after the delete until 404")
            while time.monotonic() < deadline and driver.ex_get_node_details(server_id) is not None:
                time.sleep(2)
            server_id = None
            rec.label("get_port", "the port after its server is gone: kept, unbound")
            for _ in range(10):
                answer = driver.network_connection.request(f"/v2.0/ports/{port_id}").object["port"]
                if not answer.get("device_id"):
                    break
                time.sleep(2)
            rec.label("delete_port", "DELETE /v2.0/ports/{id}")
            driver.network_connection.request(f"/v2.0/ports/{port_id}", method="DELETE")
            deleted, port_id = port_id, None
            rec.label("get_port", "GET of a deleted port: 404")
            with contextlib.suppress(Exception):
                driver.network_connection.request(f"/v2.0/ports/{deleted}")
            rec.label("delete_port", "DELETE of a deleted port: 404")
            with contextlib.suppress(Exception):
                driver.network_connection.request(f"/v2.0/ports/{deleted}", method="DELETE")
            rec.label("create_port", "POST /v2.0/ports on a network that does not exist: 404")
            with contextlib.suppress(Exception):
                driver.network_connection.request("/v2.0/ports", method="POST", data={"port": {
                    **body["port"], "network_id": str(uuid.UUID(int=0))}})  # fmt: skip
            rec.label("create_port", "POST /v2.0/ports with a security group that does not exist: 404")
            with contextlib.suppress(Exception):
                driver.network_connection.request("/v2.0/ports", method="POST", data={"port": {
                    **body["port"], "security_groups": [str(uuid.UUID(int=0))]}})  # fmt: skip
        finally:
            rec.label("cleanup", "cleanup")
            if server_id:
                with contextlib.suppress(Exception):
                    driver.destroy_node(Node(id=server_id, name=None, state=None, public_ips=[], private_ips=[],
                                             driver=driver))  # fmt: skip
                    for _ in range(60):
                        if driver.ex_get_node_details(server_id) is None:
                            break
                        time.sleep(2)
            if port_id:
                with contextlib.suppress(Exception):
                    driver.network_connection.request(f"/v2.0/ports/{port_id}", method="DELETE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the exchanges and calls.json")
    parser.add_argument("--image", default="blank", help="Glance image to boot (it only needs to go ACTIVE)")
    parser.add_argument("--flavor", default="j1.tiny", help="Nova flavor")
    args = parser.parse_args()
    record(args.out, args.image, args.flavor)


if __name__ == "__main__":
    main()
