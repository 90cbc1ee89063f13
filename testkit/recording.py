"""Record real OpenStack API exchanges as the JSON files of ``testkit/osdouble/recordings/``.

One file per exchange, ``NNN-METHOD-path_with_ID-STATUS.json``: ``seq``, ``call`` (the API operation),
``purpose``, ``request`` (method, scheme, host, path, parsed query, headers, JSON body), ``response``
(status, reason, headers, JSON body, ``elapsed_s``), ``t``; and ``calls.json``, the index. Tokens are
replaced by ``<TOKEN>``; ids, names and dates are the real ones. Nothing is written unless a directory is
given.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

SECRET_HEADERS = {"x-auth-token", "x-subject-token", "x-service-token"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")


def _headers(headers) -> dict[str, str]:
    return {k: ("<TOKEN>" if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}


def _body(raw: bytes | str | None, secrets: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    if not raw:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    for secret, placeholder in (secrets or {}).items():
        text = text.replace(secret, placeholder)
    try:
        data = json.loads(text)
    except ValueError:
        return {"text": text}
    return {"json": _hide_admin_pass(data)}


def _hide_admin_pass(data: Any) -> Any:
    """Nova's generated ``adminPass`` becomes ``<ADMIN_PASS>``."""
    if isinstance(data, dict):
        return {k: ("<ADMIN_PASS>" if k == "adminPass" else _hide_admin_pass(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [_hide_admin_pass(v) for v in data]
    return data


def file_name(seq: int, method: str, path: str, status: int) -> str:
    """``001-POST-v3_PROJECT_volumes-202.json``: ids become ID (the project id PROJECT), '/', '-', '.' become '_'."""
    parts = path.strip("/").split("/")
    if len(parts) > 1 and parts[0] == "v3" and UUID.fullmatch(parts[1]):
        parts[1] = "PROJECT"
    slug = "_".join(UUID.sub("ID", p).replace("-", "_").replace(".", "_") for p in parts)
    return f"{seq:03d}-{method}-{slug}-{status}.json"


class Recorder:
    """Wraps a keystoneauth adapter call (``conn.block_storage.post`` ...) and keeps what went over the wire."""

    def __init__(self, directory: Path | None, secrets: Mapping[str, str] | None = None):
        self.directory = directory
        self.secrets = dict(secrets or {})  # text -> placeholder, replaced in request and response bodies
        self.calls: list[dict[str, Any]] = []
        self.seq = 0

    def __call__(self, call: str, purpose: str, fn, path: str, **kwargs):
        """``fn(path, **kwargs)`` (never raising on HTTP errors), recorded; returns the ``requests`` response."""
        started = time.time()
        response = fn(path, raise_exc=False, **kwargs)
        if self.directory is not None:
            self._write(call, purpose, response, started)
        return response

    def _write(self, call: str, purpose: str, response, started: float) -> None:
        request = response.request
        url = urlsplit(request.url)
        self.seq += 1
        name = file_name(self.seq, request.method, url.path, response.status_code)
        exchange = {
            "seq": self.seq,
            "call": call,
            "purpose": purpose,
            "request": {
                "method": request.method,
                "scheme": url.scheme,
                "host": url.netloc,
                "path": url.path,
                "query": parse_qs(url.query),
                "headers": _headers(request.headers),
                "body": _body(request.body, self.secrets),
            },
            "response": {
                "status": response.status_code,
                "reason": response.reason,
                "headers": _headers(response.headers),
                "body": _body(response.content, self.secrets),
                "elapsed_s": round(response.elapsed.total_seconds(), 3),
            },
            "t": round(started, 3),
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / name).write_text(json.dumps(exchange, indent=1) + "\n")
        if self.calls and self.calls[-1]["call"] == call and self.calls[-1]["purpose"] == purpose:
            self.calls[-1]["exchanges"].append(name)  # one libcloud call, several requests
        else:
            self.calls.append({"call": call, "purpose": purpose, "exchanges": [name]})
        (self.directory / "calls.json").write_text(json.dumps(self.calls, indent=1) + "\n")


class LibcloudRecorder:
    """Records every request a libcloud driver sends (``LibcloudConnection.request`` wrapped), labelled with
    the libcloud call and its purpose given by :meth:`label`, in the format of :class:`Recorder`."""

    def __init__(self, directory: Path | None, secrets: Mapping[str, str] | None = None):
        self.recorder = Recorder(directory, secrets)
        self.call, self.purpose = "", ""

    def label(self, call: str, purpose: str) -> None:
        self.call, self.purpose = call, purpose

    @contextlib.contextmanager
    def wrapping(self):
        from libcloud.http import LibcloudConnection

        original = LibcloudConnection.request
        recorder = self

        def request(conn, *args, **kwargs):
            started = time.time()
            result = original(conn, *args, **kwargs)
            if recorder.recorder.directory is not None:
                recorder.recorder._write(recorder.call, recorder.purpose, conn.response, started)
            return result

        LibcloudConnection.request = request
        try:
            yield self
        finally:
            LibcloudConnection.request = original
