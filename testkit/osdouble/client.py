"""Python client of the double's control API (``/_double/...``), standard library only, synchronous.

client = DoubleClient("http://127.0.0.1:PORT")        # the control URL (or the API URL)
client.set_config(latency_s=1.0)
rule = client.add_fault(method="POST", path="^/v2.1/servers$", nth=1, effect="lost_response")
client.wait_for_server(name="jupyter-alice", status="ACTIVE", timeout_s=30)
report = client.boot_report(server_id)
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any


class DoubleError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status


class DoubleClient:
    def __init__(self, control_url: str, timeout_s: float = 30.0):
        if not control_url.startswith(("http://", "https://")):
            raise ValueError(f"not an http URL: {control_url!r}")
        self.base = control_url.rstrip("/")
        self.timeout_s = timeout_s

    # ------------------------------------------------------------------ transport

    def _request(self, method: str, path: str, body: Any = None, raw: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)  # noqa: S310 (http only)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                text = json.loads(text).get("error", text)
            except ValueError:
                pass
            raise DoubleError(exc.code, text) from None
        if raw:
            return payload.decode(errors="replace")
        return json.loads(payload) if payload else None

    # ------------------------------------------------------------------ state

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/_double/health")

    def config(self) -> dict[str, Any]:
        return self._request("GET", "/_double/config")

    def set_config(self, **values: Any) -> dict[str, Any]:
        """E.g. ``set_config(latency_s=1.0, scheduling_s=0.2, no_run=True, token_ttl_s=30)``."""
        return self._request("PATCH", "/_double/config", values)

    def set_latency(self, seconds: float) -> dict[str, Any]:
        return self.set_config(latency_s=seconds)

    def catalogue(self) -> dict[str, Any]:
        return self._request("GET", "/_double/catalogue")

    def set_catalogue(self, preset: str | None = None, **parts: Any) -> dict[str, Any]:
        """Replace parts: ``images=[{"name": "x", "size": 1 << 30, "virtual_size": 8 << 30}]``,
        ``flavors=[{"name": "m1.x", "vcpus": 1, "ram": 2048, "disk": 20}]``, ``networks=[{"name": "n"}]``,
        ``quotas={"instances": 3}``, ``host={"ram": 4096}``; ``preset="recorded"`` starts from a preset."""
        body: dict[str, Any] = dict(parts)
        if preset is not None:
            body["preset"] = preset
        return self._request("PUT", "/_double/catalogue", body)

    def reset(self, config: bool = False, catalogue: bool = False) -> None:
        """Delete every server (processes killed), clear rules, calls and tokens; restart a stopped API."""
        self._request("POST", "/_double/reset", {"config": config, "catalogue": catalogue})

    # ------------------------------------------------------------------ faults

    def add_fault(self, effect: str | dict[str, Any], **match: Any) -> dict[str, Any]:
        """Add a rule (see testkit/osdouble/faults.py); ``effect`` is a type name or a full effect dict.

        ``add_fault({"type": "status", "status": 500}, method="GET", path="/servers/detail", times=2)``
        """
        rule = dict(match)
        rule["effect"] = {"type": effect} if isinstance(effect, str) else effect
        return self._request("POST", "/_double/faults", rule)

    def faults(self) -> list[dict[str, Any]]:
        return self._request("GET", "/_double/faults")

    def fault(self, rule_id: int) -> dict[str, Any]:
        return self._request("GET", f"/_double/faults/{rule_id}")

    def remove_fault(self, rule_id: int) -> None:
        self._request("DELETE", f"/_double/faults/{rule_id}")

    def clear_faults(self) -> None:
        self._request("DELETE", "/_double/faults")

    def expire_tokens(self) -> int:
        """Every token issued so far stops working (401) until the client authenticates again."""
        return self._request("POST", "/_double/tokens/expire", {})["expired"]

    def stop_api(self, for_s: float | None = None) -> None:
        """Close the API port (connection refused), optionally restarting by itself after ``for_s``."""
        self._request("POST", "/_double/api/stop", {"for_s": for_s})
        deadline = time.monotonic() + 5
        while self.health()["api_up"]:
            if time.monotonic() > deadline:
                raise TimeoutError("API did not stop")
            time.sleep(0.02)

    def start_api(self) -> None:
        self._request("POST", "/_double/api/start", {})

    # ------------------------------------------------------------------ servers

    def servers(self, deleted: bool = False) -> list[dict[str, Any]]:
        return self._request("GET", f"/_double/servers?deleted={'1' if deleted else '0'}")

    def ports(self) -> list[dict[str, Any]]:
        """Neutron ports not deleted (as ``GET /v2.0/ports/{id}`` shows them)."""
        return self._request("GET", "/_double/ports")

    def server(self, server_id: str) -> dict[str, Any]:
        return self._request("GET", f"/_double/servers/{server_id}")

    def boot_report(self, server_id: str) -> dict[str, Any]:
        return self._request("GET", f"/_double/servers/{server_id}/boot")

    def instance_env(self, server_id: str) -> list[dict[str, Any]]:
        """The exact environment each started unit got (holds secrets: for assertions only)."""
        return self._request("GET", f"/_double/servers/{server_id}/env")

    def instance_log(self, server_id: str) -> str:
        return self._request("GET", f"/_double/servers/{server_id}/log", raw=True)

    def user_data(self, server_id: str) -> str:
        return self._request("GET", f"/_double/servers/{server_id}/user_data", raw=True)

    def force_error(
        self, server_id: str, message: str = "No valid host was found. ", code: int = 500, kill: bool = True
    ) -> dict[str, Any]:
        """Put a server into ERROR with this fault now (its process is killed unless ``kill=False``)."""
        return self._request(
            "POST", f"/_double/servers/{server_id}/error", {"message": message, "code": code, "kill": kill}
        )

    def power_off(self, server_id: str) -> dict[str, Any]:
        """The guest shuts down now (as a host reboot leaves it): SHUTOFF, its processes stopped."""
        return self._request("POST", f"/_double/servers/{server_id}/shutoff", {})

    def kill_instance_process(self, server_id: str, signal: str = "SIGKILL") -> list[int]:
        """The service inside the VM gets ``signal``; the instance stays ACTIVE. systemd's Restart= is
        honoured (``on-failure`` restarts after SIGKILL, not after the clean SIGTERM)."""
        return self._request("POST", f"/_double/servers/{server_id}/kill", {"signal": signal})["killed"]

    def wait_for_server(
        self,
        server_id: str | None = None,
        *,
        name: str | None = None,
        status: str = "ACTIVE",
        boot_status: str | None = None,
        timeout_s: float = 30.0,
    ) -> dict[str, Any]:
        """Wait (with a deadline) until a server (by id or exact name) has ``status``
        (BUILD/ACTIVE/ERROR/DELETED) and, if given, ``boot_status`` (running, not-started, stand-in...)."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            for s in self.servers(deleted=True):
                if (server_id and s["id"] == server_id) or (name and s["name"] == name):
                    last = s
            if last and last["status"] == status and (boot_status is None or last["boot_status"] == boot_status):
                return last
            time.sleep(0.05)
        raise TimeoutError(f"server {server_id or name} not {status}/{boot_status} after {timeout_s}s: {last}")

    # ------------------------------------------------------------------ volumes

    def volumes(self, deleted: bool = False) -> list[dict[str, Any]]:
        """Cinder volumes: id, name, status (``deleted`` once gone), size, metadata, attachment."""
        return self._request("GET", f"/_double/volumes?deleted={'1' if deleted else '0'}")

    def volume(self, volume_id: str) -> dict[str, Any]:
        return self._request("GET", f"/_double/volumes/{volume_id}")

    def set_volume_status(self, volume_id: str, status: str) -> dict[str, Any]:
        """The volume is in ``status`` now and stays there (``error``, a stuck ``detaching``...)."""
        return self._request("POST", f"/_double/volumes/{volume_id}/status", {"status": status})

    def wait_for_volume(self, volume_id: str, status: str = "available", timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait (with a deadline) until a volume has ``status`` (``deleted`` once it is gone)."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            last = self.volume(volume_id)
            if last["status"] == status:
                return last
            time.sleep(0.05)
        raise TimeoutError(f"volume {volume_id} not {status} after {timeout_s}s: {last}")

    # ------------------------------------------------------------------ calls

    def calls(self, since: int = 0) -> list[dict[str, Any]]:
        """Every API call: seq, t, method, path, query, service, route, status (0 = no answer), effect."""
        return self._request("GET", f"/_double/calls?since={since}")

    def call_counts(self) -> dict[str, Any]:
        """``{"total", "by_route": {"GET /v2.1/servers/{id}": n}, "by_status": {...}}``."""
        return self._request("GET", "/_double/calls/counts")

    def clear_calls(self) -> None:
        self._request("DELETE", "/_double/calls")
