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

from tests.support.ports import free_port, release_ports
from tests.support.servers import database_url

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


class PortalServer:
    """daphne serving the portal (embedded sipworker) on the test database, on a port that
    stays the same across restarts (a test may kill -9 it and start it again).

    The port is reserved (tests.support.ports: below the ephemeral range, locked across
    processes) until stop(): daphne binds it only ~2 s later, and pytest-xdist workers start
    servers, PBXs and browsers side by side in that time."""

    def __init__(self, tmp_path):
        self.port = free_port(udp=False)
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp_path = tmp_path
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "DEBUG": "true",
            "SIPWORKER_RELEASE_SECONDS": "2",
            # A crash of the server (a C extension at exit) leaves its Python stack in the log.
            "PYTHONFAULTHANDLER": "1",
            # Webhook receivers of the tests listen on 127.0.0.1, internal unless allowed.
            "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        }
        self.env.pop("REDIS_URL", None)
        self.proc: subprocess.Popen | None = None
        self.logs: list = []

    def start(self) -> "PortalServer":
        log = open(self.tmp_path / f"daphne-{len(self.logs)}.log", "w+")  # noqa: SIM115
        self.logs.append(log)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
             "portal.asgi:application"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"daphne did not start:\n{log.read()}")
                time.sleep(0.1)

    def kill(self) -> None:
        """kill -9: no clean shutdown, no un-REGISTER, no history written on the way out."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for log in self.logs:
            log.close()
        release_ports(self.port)


@pytest.fixture
def portal(transactional_db, tmp_path):
    """The running PortalServer (for tests that restart it)."""
    server = PortalServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def portal_server(portal):
    """Base URL of a daphne serving the portal on the test database."""
    return portal.url


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


def wait_until(page, expression: str, timeout: float = 15.0) -> None:
    """Wait until a JavaScript expression is truthy in the page.

    Playwright's wait_for_function polls with eval inside the page, which the portal's
    Content-Security-Policy forbids (no 'unsafe-eval'); page.evaluate goes through the
    DevTools protocol, which the policy does not govern."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {expression}")
        time.sleep(0.05)


def htmx_settled(page, timeout: float = 15.0) -> None:
    """Wait until htmx has no request, swap or settle under way. htmx wires the controls of new
    content (hx-get, hx-post) when it settles, 20 ms after the swap (defaultSettleDelay): a
    button pressed within that window, as Playwright can under load, does nothing."""
    wait_until(
        page,
        "!document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling, .htmx-added')",
        timeout,
    )


# The page's received audio: the remote stream's dominant frequency by a WebAudio AnalyserNode.
ANALYSE = """async (ms) => {
  const audio = document.querySelector('[data-testid="remote-audio"]');
  const context = new AudioContext();
  const source = context.createMediaStreamSource(audio.srcObject);
  const analyser = context.createAnalyser();
  analyser.fftSize = 8192;
  source.connect(analyser);
  const sums = new Float32Array(analyser.frequencyBinCount);
  const frame = new Float32Array(analyser.frequencyBinCount);
  for (let t = 0; t < ms; t += 100) {
    await new Promise((r) => setTimeout(r, 100));
    analyser.getFloatFrequencyData(frame);
    for (let i = 0; i < frame.length; i++) sums[i] += Math.pow(10, frame[i] / 20);
  }
  let best = 1;
  for (let i = 2; i < sums.length; i++) if (sums[i] > sums[best]) best = i;
  const result = best * context.sampleRate / analyser.fftSize;
  await context.close();
  return result;
}"""


@pytest.fixture
def far_phone(on_pbx):
    from tests.e2e.far_end import ThreadedPhone

    phones = []

    def make(ext, tone_hz=700):
        phones.append(ThreadedPhone(on_pbx, ext, tone_hz))
        return phones[-1]

    yield make
    for phone in phones:
        phone.close()


# Record the page's commands instead of sending them (the server has no such calls); media
# negotiation still goes out so the page behaves as usual.
RECORD_SENT = """() => {
  const socket = window.browserPhone.socket;
  const send = socket.send.bind(socket);
  window.sent = [];
  socket.send = (type, fields = {}) => {
    if (type.startsWith("webrtc.") || type === "ping") return send(type, fields);
    window.sent.push({ type, ...fields });
  };
}"""
