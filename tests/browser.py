"""Playwright + Debian's Chromium for tests that drive the console like a person."""

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@contextmanager
def chromium_tab(base_url: str):
    """A tab of a fresh headless Chromium whose relative URLs go to ``base_url``. Set
    DJANGO_ALLOW_ASYNC_UNSAFE first: Playwright's sync API runs an event loop in this thread,
    and the ORM calls the test makes around it are still plain synchronous code."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("MANDATE_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing and MANDATE_REQUIRE_BROWSER is set")
        pytest.skip("Debian chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        context = browser.new_context(base_url=base_url)
        tab = context.new_page()
        tab.set_default_timeout(15000)
        try:
            yield tab
        finally:
            context.close()
            browser.close()


@pytest.fixture
def page(live_server, monkeypatch, tmp_path):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with chromium_tab(live_server.url) as tab:
        yield tab
