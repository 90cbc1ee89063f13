"""The image's start-up helper (images/packer/files/lcs_startup.py): GC paused during start-up, resumed once.

Each case runs in its own interpreter: the collector's state is process-wide. In the image, the booted tier
checks the real server logging the resume (tests/images/test_booted.py).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO

FILES = REPO / "images" / "packer" / "files"


def run(code: str) -> str:
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=FILES, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_paused_for_start_up_then_resumed_with_start_up_objects_frozen_on_the_loops_first_turn():
    out = run("""
        import gc, logging, types
        from tornado.ioloop import IOLoop
        import lcs_startup
        lcs_startup.pause()
        assert not gc.isenabled()
        junk = [[i] for i in range(10_000)]  # start-up allocations
        loop = IOLoop.current()
        lcs_startup._load_jupyter_server_extension(types.SimpleNamespace(log=logging.getLogger("t")))
        assert not gc.isenabled()  # not before the loop turns
        loop.add_callback(loop.stop)
        loop.start()
        print(gc.isenabled(), gc.get_freeze_count() >= 10_000, lcs_startup.resume())
    """)
    assert out.split() == ["True", "True", "False"]  # enabled, start-up frozen, a second resume does nothing


def test_a_collector_someone_else_disabled_is_left_alone():
    out = run("""
        import gc
        import lcs_startup
        gc.disable()
        lcs_startup.pause()
        print(lcs_startup.resume(), gc.isenabled(), gc.get_freeze_count())
    """)
    assert out.split() == ["False", "False", "0"]


def test_the_fallback_timer_resumes_when_the_extension_never_runs():
    out = run("""
        import gc, time
        import lcs_startup
        lcs_startup.FALLBACK_S = 0.2
        lcs_startup.pause()
        deadline = time.monotonic() + 10
        while not gc.isenabled() and time.monotonic() < deadline:
            time.sleep(0.05)
        print(gc.isenabled(), lcs_startup.resume())
    """)
    assert out.split() == ["True", "False"]


def test_main_is_jupyterhub_singleuser_with_its_arguments_and_exit_status():
    r = subprocess.run(
        [sys.executable, "-c", "import sys, lcs_startup; sys.exit(lcs_startup.main())", "--version"],
        cwd=FILES, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    import jupyterhub

    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == jupyterhub.__version__


def test_the_module_declares_itself_as_a_jupyter_server_extension():
    out = run("import lcs_startup; print(lcs_startup._jupyter_server_extension_points())")
    assert out.strip() == "[{'module': 'lcs_startup'}]"
