"""Playwright driving Debian's Chromium (no browser download) against live_server."""

import io
import os
import shutil

import pytest
from django.core.management import call_command

# Playwright's sync API runs an event loop in this thread; the ORM calls the tests
# make around it are still plain synchronous code.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser():
    path = chromium_path()
    if path is None:
        message = "Debian's chromium is not installed (`apt-get install chromium`)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=path, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def demo_loaded(fixtures_dir):
    """The demo story played on the shared fixtures, as `make run` loads it."""
    call_command("demo", fixtures=fixtures_dir, stdout=io.StringIO())


@pytest.fixture
def signed_in(page, live_server, demo_loaded):
    """A page signed in as the demo marketer, on the dashboard."""
    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill("demo")
    page.get_by_label("Password").fill("bespoke-demo")
    page.get_by_role("button", name="Sign in").click()
    return page
