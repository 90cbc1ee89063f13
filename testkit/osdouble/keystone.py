"""Keystone v3: tokens (password and application credential) and version discovery."""

from __future__ import annotations

import base64
import copy
import hashlib
import time
import uuid
from typing import Any

from .base import BaseHandler
from .records import Token, iso_micro, same_name


class KeystoneTokensHandler(BaseHandler):
    service = "identity"
    route = "/v3/auth/tokens"
    needs_token = False

    def service_headers(self) -> None:
        self.set_header("Vary", "X-Auth-Token")
        self.set_header("x-openstack-request-id", self.req_id)

    def catalog(self) -> list[dict[str, Any]]:
        base = self.base_url
        region = self.double.identity()["region"]
        project = self.double.identity()["project"]["id"]
        services = [
            ("compute", "nova", f"{base}/v2.1"),
            ("volumev3", "cinder", f"{base}/v3/{project}"),  # as the dev cloud names it (not "cinderv3")
            ("image", "glance", base),
            ("network", "neutron", base),
            ("identity", "keystone", f"{base}/v3/"),
        ]
        out = []
        for stype, name, url in services:
            endpoints = [
                {
                    "id": uuid.uuid5(uuid.NAMESPACE_URL, f"{stype}/{iface}").hex,
                    "interface": iface,
                    "region_id": region,
                    "url": url,
                    "region": region,
                }
                for iface in ("public", "internal", "admin")
            ]
            out.append(
                {"endpoints": endpoints, "id": uuid.uuid5(uuid.NAMESPACE_URL, stype).hex, "type": stype, "name": name}
            )
        return out

    def token_body(self, tok: Token, methods: list[str], appcred: dict[str, Any] | None) -> dict[str, Any]:
        ident = self.double.identity()
        domain = ident["domain"]
        body: dict[str, Any] = {
            "methods": methods,
            "user": {
                "domain": dict(domain),
                "id": ident["user"]["id"],
                "name": ident["user"]["name"],
                "password_expires_at": None,
            },
            "audit_ids": [
                base64.urlsafe_b64encode(hashlib.sha256(tok.value.encode()).digest()[:16]).decode().rstrip("=")[:22]
            ],
            "expires_at": iso_micro(tok.expires)[:-6] + "000000Z",
            "issued_at": iso_micro(tok.issued)[:-6] + "000000Z",
            "project": {"domain": dict(domain), "id": ident["project"]["id"], "name": ident["project"]["name"]},
            "is_domain": False,
            "roles": copy.deepcopy(ident["roles"]),
            "catalog": self.catalog(),
        }
        if appcred is not None:
            body["application_credential"] = {"id": appcred["id"], "name": appcred["name"], "restricted": True}
        return {"token": body}

    def _user_matches(self, user: Any) -> bool:
        ident = self.double.identity()
        if not isinstance(user, dict):
            return False
        if "id" in user:
            return bool(user["id"] == ident["user"]["id"])
        dom = user.get("domain") or {}
        dom_ok = dom.get("id") == ident["domain"]["id"] or same_name(dom.get("name"), ident["domain"]["name"])
        return bool(user.get("name") == ident["user"]["name"] and dom_ok)

    def authenticate(self, body: Any) -> tuple[list[str], dict[str, Any] | None] | None:
        ident = self.double.identity()
        try:
            identity = body["auth"]["identity"]
            methods = identity["methods"]
        except (KeyError, TypeError):
            return None
        if methods == ["password"]:
            user = identity.get("password", {}).get("user")
            if not self._user_matches(user) or user.get("password") != ident["user"]["password"]:
                return None
            scope = body["auth"].get("scope")
            if scope is not None:
                project = scope.get("project") if isinstance(scope, dict) else None
                if project is None:
                    if isinstance(scope, dict) and "domain" in scope:
                        return methods, None  # domain scope: served like the project (approximation)
                    return None
                if "id" in project:
                    if project["id"] != ident["project"]["id"]:
                        return None
                else:
                    dom = project.get("domain") or {}
                    dom_ok = dom.get("id") == ident["domain"]["id"] or same_name(
                        dom.get("name"), ident["domain"]["name"]
                    )
                    if project.get("name") != ident["project"]["name"] or not dom_ok:
                        return None
            return methods, None
        if methods == ["application_credential"]:
            ac = identity.get("application_credential") or {}
            for cred in ident["application_credentials"]:
                if ac.get("secret") != cred["secret"]:
                    continue
                if "id" in ac and ac["id"] == cred["id"]:
                    return methods, cred
                if "name" in ac and ac["name"] == cred["name"] and self._user_matches(ac.get("user")):
                    return methods, cred
            return None
        return None

    async def post(self) -> None:
        body = self.json_body()
        if not isinstance(body, dict) or "auth" not in body:
            self.send_error_body(400)
            return
        result = self.authenticate(body)
        if result is None:
            self.send_error_body(401)
            return
        methods, appcred = result
        tok = self.double.issue_token(methods[0])
        self.set_header("X-Subject-Token", tok.value)
        self.send_json(201, self.token_body(tok, methods, appcred))

    async def get(self) -> None:
        if not self.double.token_ok(self.request.headers.get("X-Auth-Token")):
            self.send_error_body(401)
            return
        subject = self.request.headers.get("X-Subject-Token", "")
        tok = self.double.tokens.get(subject)
        if tok is None or not tok.valid(time.time()):
            self.send_error_body(404, f"Could not find token: {subject}.")
            return
        self.set_header("X-Subject-Token", subject)
        self.send_json(200, self.token_body(tok, [tok.method], None))

    async def prepare(self) -> None:
        await super().prepare()


class KeystoneVersionHandler(BaseHandler):
    """Version discovery (keystoneauth / openstacksdk ask for it; libcloud does not)."""

    service = "identity"
    route = "/v3"
    needs_token = False

    def version(self) -> dict[str, Any]:
        return {
            "id": "v3.14",
            "status": "stable",
            "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{self.base_url}/v3/"}],
            "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
        }

    async def get(self, root: str = "") -> None:
        if self.request.path.rstrip("/") == "":
            self.send_json(300, {"versions": {"values": [self.version()]}})
        else:
            self.send_json(200, {"version": self.version()})


ROUTES = [
    (r"/v3/auth/tokens", KeystoneTokensHandler),
    (r"/(v3/?)?", KeystoneVersionHandler),
]
