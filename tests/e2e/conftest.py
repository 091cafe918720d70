"""End-to-end fixtures: the real ASGI server (daphne) in a subprocess and Debian's Chromium.

The server reads the test database that pytest-django set up, so tests create data with the ORM
(transactional_db: committed, visible to the other process) and drive the browser against it.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.servers import database_url, free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
]


@pytest.fixture
def portal_server(transactional_db, tmp_path):
    """Base URL of a daphne serving the portal on the test database."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DEBUG": "true",
        "SIPWORKER_RELEASE_SECONDS": "2",
    }
    env.pop("REDIS_URL", None)
    log = open(tmp_path / "daphne.log", "w+")  # noqa: SIM115 - closed in the finalizer
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "portal.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"daphne did not start:\n{log.read()}")
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


# A module may set BROWSER_ARGS = [...] for extra Chromium flags (e.g. a fake microphone file).
@pytest.fixture(scope="module")
def browser(request, tmp_path_factory):
    """Module-scoped: Playwright's sync API keeps an event loop running while it is started, which
    would break the asyncio tests of other modules if it outlived this one."""
    extra = list(getattr(request.module, "BROWSER_ARGS", []))
    if callable(getattr(request.module, "browser_args", None)):
        extra += request.module.browser_args(tmp_path_factory.mktemp("browser"))
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/system-packages as root")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread; Django would then refuse
    # the test's own ORM calls (fixtures, flushes), which are in fact synchronous here.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS + extra
            )
            yield browser
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 850})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """The server process checks passwords with the real hashers: keep them for e2e tests."""


def login(page, server, user, password):
    """Log in through the real form and land on the phone page."""
    page.goto(f"{server}/login/")
    page.get_by_test_id("login-username").fill(user)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-submit").click()
    page.wait_for_url(f"{server}/")
