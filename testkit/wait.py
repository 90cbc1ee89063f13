"""The one polling helper of the tests and benchmarks: every wait has a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], *, timeout_s: float, interval_s: float = 0.2, what: str = "condition") -> T:
    """Call ``predicate`` every ``interval_s`` seconds until it returns a truthy value, and return that value.

    Raises ``TimeoutError`` naming ``what`` (and the last value seen) once ``timeout_s`` seconds have passed.
    An exception from ``predicate`` propagates at once (a check may fail fast, e.g. "the process exited").
    """
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")
