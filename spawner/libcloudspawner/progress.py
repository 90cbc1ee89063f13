"""A start's progress events, as JupyterHub streams them to the spawn page (pure asyncio, no spawner)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any


class ProgressLog:
    """Events of the current start: ``emit`` appends one (and logs it), ``events`` yields them as they come
    until the start is ``finish``-ed. ``reset`` forgets the last start's events."""

    def __init__(self, log: logging.Logger | logging.LoggerAdapter, log_name: str = "") -> None:
        self.log = log
        self.log_name = log_name
        self.events: list[dict[str, Any]] = []
        self.done = True
        self._changed = asyncio.Event()

    def reset(self) -> None:
        self.events = []
        self.done = False

    def emit(self, progress: int, message: str) -> None:
        self.events.append({"progress": progress, "message": message})
        self.log.info("%s: %s", self.log_name, message)
        self._wake()

    def finish(self) -> None:
        self.done = True
        self._wake()

    @property
    def last_message(self) -> str:
        return self.events[-1]["message"] if self.events else "starting"

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def stream(self) -> AsyncIterator[dict[str, Any]]:
        index = 0
        while True:
            while index < len(self.events):
                yield self.events[index]
                index += 1
            if self.done:
                return
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass
