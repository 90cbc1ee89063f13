"""The options form and the spawn progress page in a real headless Chromium (Debian's `chromium`), against the
hub tier's real JupyterHub + proxy + OpenStack API double. Screenshots are kept in `artifacts/hub/`.

The end-to-end tier does the same against the real dev cloud; this one runs on every CI run.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from testkit.hub import browser_open_spawn_form, cloud_servers, original_config, running_hub

pytestmark = pytest.mark.hub

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "hub"
CHROMIUM = "/usr/bin/chromium"
BOOT_DELAY_S = 20  # the "VM" boots this long before its Jupyter answers: time to see the progress page
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="module")
def hub(tmp_path_factory, double):
    extra = "c.LibcloudSpawner.start_timeout = 120\nc.LibcloudSpawner.startup_poll_interval_seconds = 1\n"
    with running_hub(tmp_path_factory.mktemp("hubbrowser"), double, original_config(double.url), extra) as h:
        yield h


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (./bootstrap does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


def test_form_and_live_progress_page_in_chromium(hub, double, browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    user = "mona"
    hub.create_user(user)
    double.client.set_config(boot_delay_s=BOOT_DELAY_S)
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    try:
        browser_open_spawn_form(page, hub.url, user)

        # the form offers exactly what the administrator configured, by display name
        sizes = [t.strip() for t in page.locator("select[name=size] option").all_inner_texts()]
        images = [t.strip() for t in page.locator("select[name=image] option").all_inner_texts()]
        assert sizes == ["1vcpu 2Go RAM", "2vcpu 4Go RAM"]
        assert images == ["Default image", "Base image"]
        page.select_option("select[name=size]", "m1.medium")
        page.screenshot(path=str(ARTIFACTS / "hub-options-form.png"), full_page=True)
        page.click("form button[type=submit]")
        page.wait_for_url("**/hub/spawn-pending/**", timeout=30_000)

        # the progress arrives while the VM boots, not only at the end (textContent: the log sits in a closed
        # <details> element, whose innerText is empty)
        page.wait_for_function(
            "document.querySelector('#progress-log') &&"
            " document.querySelector('#progress-log').textContent.includes('waiting for Jupyter to answer')",
            timeout=60_000,
            polling=200,
        )
        seen_at = time.monotonic()
        page.locator("#progress-details").evaluate("d => d.open = true")
        width = float(page.locator("#progress-bar").get_attribute("aria-valuenow") or 0)
        page.screenshot(path=str(ARTIFACTS / "hub-spawn-progress.png"), full_page=True)
        log = page.text_content("#progress-log") or ""
        for phase in ("Checking the server options", "Creating virtual machine", "Virtual machine running at"):
            assert phase in log, log
        assert 50 <= width < 100, f"progress bar at {width}% while the VM boots"
        assert page.locator("#progress-bar.bg-danger").count() == 0

        # ready: the page sends the user on to the server, through the proxy
        page.wait_for_url(f"**/user/{user}/**", timeout=(BOOT_DELAY_S + 60) * 1000)
        assert time.monotonic() - seen_at > 5, "the progress was shown only at the very end"
        page.screenshot(path=str(ARTIFACTS / "hub-server-reached.png"), full_page=True)
    finally:
        page.close()
        double.client.set_config(boot_delay_s=0.0)
    [vm] = cloud_servers(double, user=user)
    assert vm["flavor"] == "m1.medium"  # what the form sent
    assert hub.api("DELETE", f"/users/{user}/server").status_code in (202, 204)
    hub.wait_gone(user)
