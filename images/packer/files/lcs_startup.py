"""Start-up of ``jupyterhub-singleuser`` in LibcloudSpawner's images: the cyclic GC paused until the server serves.

A single-user server allocates several hundred thousand long-lived objects while it imports and initialises
(JupyterHub, Jupyter Server, JupyterLab, their extensions). CPython's cyclic garbage collector scans them again
and again on the way: 330 young, 30 middle and 2 full collections, about 15% of the start's CPU time, and on an
emulated or small VM that is seconds the user waits for. None of it frees anything worth having: start-up
objects live as long as the server.

So the image's ``jupyterhub-singleuser`` runs :func:`main`, which pauses the collector and runs JupyterHub's
own entry point. The Jupyter Server extension of this module (enabled in the venv's
``jupyter_server_config.d/lcs_startup.json``) resumes it on the server's event loop's first turn, that is when
the server starts serving: everything allocated so far is moved to the permanent generation (``gc.freeze``:
never scanned again, which also makes every later full collection cheaper) and collection is enabled again.
If the extension never runs (disabled by an administrator, or another command line), a timer resumes the
collector after ``FALLBACK_S`` seconds. Reference counting frees acyclic garbage all along; only garbage cycles
created during start-up wait.

Nothing else changes: same arguments, same configuration, same exit status as ``jupyterhub-singleuser``.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time

#: the collector is resumed after this long even if the server's event loop never turned (it always does)
FALLBACK_S = 600.0

_paused_at: float | None = None
_lock = threading.Lock()


def pause() -> None:
    """Pause the cyclic GC for the start-up (and arm the fallback timer)."""
    global _paused_at
    with _lock:
        if not gc.isenabled():
            return  # someone else's choice: leave it alone, and never resume it
        gc.disable()
        _paused_at = time.monotonic()
    timer = threading.Timer(FALLBACK_S, resume, kwargs={"reason": f"fallback after {FALLBACK_S:.0f} s"})
    timer.daemon = True
    timer.start()


def resume(log: logging.Logger | None = None, reason: str = "the server is serving") -> bool:
    """Freeze what start-up allocated and enable the GC again; once, and only if :func:`pause` paused it."""
    global _paused_at
    with _lock:
        if _paused_at is None:
            return False
        paused_s = time.monotonic() - _paused_at
        _paused_at = None
        gc.freeze()
        gc.enable()
    (log or logging.getLogger(__name__)).info(
        "lcs_startup: cyclic GC resumed (%s) after %.1f s of start-up; %d start-up objects frozen",
        reason,
        paused_s,
        gc.get_freeze_count(),
    )
    return True


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "lcs_startup"}]


def _load_jupyter_server_extension(serverapp) -> None:
    """Resume the GC on the event loop's first turn (the way jupyter_lsp defers its own start-up work)."""
    from tornado.ioloop import IOLoop

    IOLoop.current().add_callback(resume, serverapp.log)


def main() -> int | None:
    """``jupyterhub-singleuser``, with the GC paused during start-up."""
    pause()
    from jupyterhub.singleuser import main as singleuser_main

    return singleuser_main()


if __name__ == "__main__":
    sys.exit(main())
