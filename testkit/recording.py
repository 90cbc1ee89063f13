"""Record real OpenStack API exchanges as the JSON files of ``testkit/osdouble/recordings/``.

One file per exchange, ``NNN-METHOD-path_with_ID-STATUS.json``: ``seq``, ``call`` (the API operation),
``purpose``, ``request`` (method, scheme, host, path, parsed query, headers, JSON body), ``response``
(status, reason, headers, JSON body, ``elapsed_s``), ``t``; and ``calls.json``, the index. Tokens are
replaced by ``<TOKEN>``; ids, names and dates are the real ones. Nothing is written unless a directory is
given.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

SECRET_HEADERS = {"x-auth-token", "x-subject-token", "x-service-token"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")


def _headers(headers) -> dict[str, str]:
    return {k: ("<TOKEN>" if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}


def _body(raw: bytes | str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        return {"json": json.loads(text)}
    except ValueError:
        return {"text": text}


def file_name(seq: int, method: str, path: str, status: int) -> str:
    """``001-POST-v3_PROJECT_volumes-202.json``: ids become ID (the project id PROJECT), '/', '-', '.' become '_'."""
    parts = path.strip("/").split("/")
    if len(parts) > 1 and parts[0] == "v3" and UUID.fullmatch(parts[1]):
        parts[1] = "PROJECT"
    slug = "_".join(UUID.sub("ID", p).replace("-", "_").replace(".", "_") for p in parts)
    return f"{seq:03d}-{method}-{slug}-{status}.json"


class Recorder:
    """Wraps a keystoneauth adapter call (``conn.block_storage.post`` ...) and keeps what went over the wire."""

    def __init__(self, directory: Path | None):
        self.directory = directory
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
                "body": _body(request.body),
            },
            "response": {
                "status": response.status_code,
                "reason": response.reason,
                "headers": _headers(response.headers),
                "body": _body(response.content),
                "elapsed_s": round(response.elapsed.total_seconds(), 3),
            },
            "t": round(started, 3),
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / name).write_text(json.dumps(exchange, indent=1) + "\n")
        self.calls.append({"call": call, "purpose": purpose, "exchanges": [name]})
        (self.directory / "calls.json").write_text(json.dumps(self.calls, indent=1) + "\n")
