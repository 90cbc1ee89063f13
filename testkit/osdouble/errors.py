"""Error answers as each OpenStack service writes them (status, headers, body).

Nova: ``{"<faultName>": {"code": N, "message": ...}}`` (names from ``nova/api/openstack/wsgi.py``),
``Content-Type: application/json; charset=UTF-8``, as in the recordings (400 ``badRequest``, 403
``forbidden``, 404 ``itemNotFound``). Cinder: the same fault names (its wsgi is Nova's), with
``Content-Type: application/json`` (recorded 404). Keystone and keystonemiddleware (a 401 in front of any service):
``{"error": {"code", "title", "message"}}``. Neutron: ``{"NeutronError": {"type", "message", "detail"}}``.
Glance: webob's HTML page.
"""

from __future__ import annotations

import http.client
import json
from typing import Any

NOVA_FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",
    501: "notImplemented",
    503: "serviceUnavailable",
}

NOVA_DEFAULT_MESSAGES = {
    400: "Bad request.",
    403: "Policy doesn't allow os_compute_api:servers:create to be performed.",
    404: "The resource could not be found.",
    409: "There was a conflict when trying to complete your request.",
    413: "This request was rate-limited.",
    429: "This request was rate-limited.",
    500: (
        "Unexpected API Error. Please report this at http://bugs.launchpad.net/nova/ and attach the "
        "Nova API log if possible.\n<class 'oslo_db.exception.DBConnectionError'>"
    ),
    503: "Service Unavailable",
}

UNAUTHORIZED_MESSAGE = "The request you have made requires authentication."

KEYSTONE_DEFAULT_MESSAGES = {
    400: "Expecting to find identity in auth. The server could not comply with the request since it is "
    "either malformed or otherwise incorrect. The client is assumed to be in error.",
    401: UNAUTHORIZED_MESSAGE,
    403: "You are not authorized to perform the requested action.",
    404: "Could not find the requested resource.",
    500: "An unexpected error prevented the server from fulfilling your request.",
    503: "The service is temporarily unavailable.",
}

NEUTRON_TYPES = {
    400: "HTTPBadRequest",
    401: "HTTPUnauthorized",
    403: "HTTPForbidden",
    404: "HTTPNotFound",
    409: "HTTPConflict",
    413: "OverQuota",
    429: "HTTPTooManyRequests",
    500: "HTTPInternalServerError",
    503: "HTTPServiceUnavailable",
}

CINDER_DEFAULT_MESSAGES = {
    400: "Bad request.",
    404: "The resource could not be found.",
    409: "There was a conflict when trying to complete your request.",
    413: "This request was rate-limited.",
    500: "The server has either erred or is incapable of performing the requested operation.",
    503: "Service Unavailable",
}

GLANCE_MESSAGES = {
    400: "The server could not comply with the request since it is either malformed or otherwise incorrect.",
    404: "The resource could not be found.",
    500: "The server has either erred or is incapable of performing the requested operation.",
    503: "The server is currently unavailable. Please try again at a later time.",
}

JSON_UTF8 = "application/json; charset=UTF-8"


def reason(status: int) -> str:
    return http.client.responses.get(status, "Unknown")


def error_response(
    service: str, status: int, message: str | None = None, *, retry_after: float | None = None
) -> tuple[dict[str, str], bytes]:
    """Headers and body of an error ``status`` from ``service`` (compute, volume, identity, image, network)."""
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after) if float(retry_after).is_integer() else retry_after)
    if status == 401 and service != "identity":
        # keystonemiddleware answers before the service sees the request
        headers["Content-Type"] = JSON_UTF8
        body: Any = {"error": {"code": 401, "title": "Unauthorized", "message": message or UNAUTHORIZED_MESSAGE}}
        return headers, json.dumps(body).encode()
    if service in ("compute", "volume"):
        name = NOVA_FAULT_NAMES.get(status, "computeFault")
        defaults = NOVA_DEFAULT_MESSAGES if service == "compute" else CINDER_DEFAULT_MESSAGES
        inner: dict[str, Any] = {"code": status, "message": message or defaults.get(status, reason(status))}
        if status in (413, 429) and retry_after is not None:
            inner["retryAfter"] = headers["Retry-After"]
        headers["Content-Type"] = JSON_UTF8 if service == "compute" else "application/json"
        return headers, json.dumps({name: inner}).encode()
    if service == "network":
        headers["Content-Type"] = "application/json"
        body = {
            "NeutronError": {
                "type": NEUTRON_TYPES.get(status, "HTTPInternalServerError"),
                "message": message or "Request Failed: internal server error while processing your request.",
                "detail": "",
            }
        }
        return headers, json.dumps(body).encode()
    if service == "image":
        headers["Content-Type"] = "text/html; charset=UTF-8"
        title = f"{status} {reason(status)}"
        text = message or GLANCE_MESSAGES.get(status, reason(status))
        html = (
            f"<html>\n <head>\n  <title>{title}</title>\n </head>\n <body>\n  <h1>{title}</h1>\n"
            f"  {text}<br /><br />\n\n\n\n </body>\n</html>"
        )
        return headers, html.encode()
    # identity (Keystone) and anything else
    headers["Content-Type"] = "application/json"
    body = {
        "error": {
            "code": status,
            "title": reason(status),
            "message": message or KEYSTONE_DEFAULT_MESSAGES.get(status, reason(status)),
        }
    }
    return headers, json.dumps(body).encode()
