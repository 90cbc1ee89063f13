"""The API port of the double going down (connection refused) and up again, as a real API process that
dies and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from tornado import httpserver, netutil, web

log = logging.getLogger("osdouble")


class ApiPort:
    """Mixin of :class:`~testkit.osdouble.state.Double`: the API's listening socket."""

    api_up: bool
    api_port: int | None
    api_host: str
    api_server: httpserver.HTTPServer | None
    api_app: web.Application | None
    _restart_task: asyncio.Task[None] | None

    def bind_api(self, host: str, port: int) -> int:
        assert self.api_app is not None
        sockets = netutil.bind_sockets(port, address=host)
        self.api_server = httpserver.HTTPServer(self.api_app, xheaders=False)
        self.api_server.add_sockets(sockets)
        self.api_host = host
        self.api_port = sockets[0].getsockname()[1]
        self.api_up = True
        return self.api_port

    async def stop_api(self, for_s: float | None = None) -> None:
        if self.api_up and self.api_server is not None:
            server = self.api_server
            server.stop()
            self.api_up = False
            # drop kept-alive client connections at once (a real API process that dies takes them with it):
            # close_all_connections alone may still be waiting when the next request arrives on one of them
            for conn in list(getattr(server, "_connections", ())):
                with contextlib.suppress(Exception):
                    conn.stream.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.close_all_connections(), 5.0)
            log.info("API stopped (connection refused)%s", f" for {for_s}s" if for_s else "")
        if for_s:
            if self._restart_task is not None:
                self._restart_task.cancel()
            self._restart_task = asyncio.get_running_loop().create_task(self._restart_after(for_s))

    async def _restart_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.start_api()

    async def start_api(self) -> None:
        if self.api_up:
            return
        assert self.api_port is not None
        deadline = time.monotonic() + 10
        while True:
            try:
                self.bind_api(self.api_host, self.api_port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        log.info("API started again on %s:%s", self.api_host, self.api_port)
