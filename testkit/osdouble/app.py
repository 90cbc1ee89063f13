"""The OpenStack API double: Keystone v3, Nova v2.1, Cinder v3, Glance v2, Neutron v2.0 and the /_double/
control API.

One asyncio process (tornado). The API listens on one port; every service lives under its own path
prefix, and the Keystone catalog points every service at that same port (``/v2.1`` Nova, ``/v2`` Glance,
``/v2.0`` Neutron, ``/v3`` Keystone, ``/v3/<project id>`` Cinder). The control API (``/_double/...``) is
served on that port and on a second, control-only port that stays up while the API is "stopped" (connection refused).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tornado import httpserver, netutil, web

from . import catalogue as catalogue_mod
from . import cinder, control, glance, keystone, neutron, nova
from .base import ApiNotFoundHandler
from .records import Config
from .state import Double, log


def bound(routes: list[tuple[str, type[web.RequestHandler]]], double: Double) -> list[Any]:
    """Tornado rules: every handler gets the one ``double``."""
    return [(pattern, handler, {"double": double}) for pattern, handler in routes]


def api_routes(double: Double) -> list[Any]:
    """The API port: the control API, then each service under its own prefix, then a 404 for the rest."""
    return bound(
        [
            *control.ROUTES,
            *keystone.ROUTES,
            *nova.ROUTES,
            *cinder.ROUTES,
            *glance.ROUTES,
            *neutron.ROUTES,
            (r"/(.*)", ApiNotFoundHandler),
        ],
        double,
    )


async def serve(
    config: Config,
    state_dir: Path,
    host: str,
    port: int,
    control_port: int | None,
    catalogue: dict[str, Any] | None = None,
) -> tuple[Double, int, int | None, httpserver.HTTPServer | None]:
    """Start the double in the running loop; return (double, api port, control port, control server)."""
    double = Double(config, state_dir, catalogue or catalogue_mod.preset("default"))
    double.api_app = web.Application(api_routes(double))
    api_port = double.bind_api(host, port)
    ctl_port = None
    ctl_server = None
    if control_port is not None:
        ctl_app = web.Application(bound([*control.ROUTES, (r"/(.*)", ApiNotFoundHandler)], double))
        sockets = netutil.bind_sockets(control_port, address=host)
        ctl_server = httpserver.HTTPServer(ctl_app)
        ctl_server.add_sockets(sockets)
        ctl_port = sockets[0].getsockname()[1]
    double.control_url = f"http://{host}:{ctl_port or api_port}"
    log.info("OpenStack API double on http://%s:%s (state %s)", host, api_port, state_dir)
    return double, api_port, ctl_port, ctl_server
