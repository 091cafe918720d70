"""pytest fixtures for tests against real SIP programs (Kamailio, baresip, SIPp).

Use them from a conftest (``from tests.support.fixtures import *``) or register the module
as a plugin in the top-level conftest (``pytest_plugins = ["tests.support.fixtures"]``).

- ``kamailio`` (module scope): a running :class:`~tests.support.pbx.Kamailio` with
  ``TEST_USERS``; tests in a module share it (and its registrations).
- ``make_kamailio`` : factory for extra/isolated instances, stopped after the test.
- ``make_baresip``  : factory for started, registered :class:`~tests.support.baresip.Baresip`
  instances (default PBX: ``kamailio``), stopped after the test.
- ``make_tone``     : ``make_tone(1000)`` -> path of a sine WAV (10 s, 8 kHz mono).
- ``make_sipp``     : factory for :class:`~tests.support.sipp.Sipp` processes, killed after.

When a program is missing the fixture skips with the apt package to install, except when
``CI`` is set: there a missing program is a failure, not a silent skip.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.baresip import Baresip, baresip_binary
from tests.support.pbx import Kamailio, kamailio_binary
from tests.support.sipp import Sipp, sipp_binary
from tests.support.tones import write_tone

# Extension -> password of the shared test PBX (tenant A: 10xx, tenant B: 20xx).
TEST_USERS = {
    "1001": "pw1001",
    "1002": "pw1002",
    "1003": "pw1003",
    "1004": "pw1004",
    "2001": "pw2001",
}

__all__ = [
    "TEST_USERS",
    "kamailio",
    "make_baresip",
    "make_kamailio",
    "make_sipp",
    "make_tone",
    "require_program",
]


def require_program(found: str | None, program: str, package: str) -> None:
    """Skip (or fail under CI) when ``program`` is not installed."""
    if found:
        return
    msg = f"{program} not installed (apt-get install -y --no-install-recommends {package})"
    if os.environ.get("CI"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def _dump_log(title: str, text: str, lines: int = 60) -> None:
    # Printed at teardown; pytest shows it only for failing tests.
    tail = "\n".join(text.splitlines()[-lines:])
    print(f"\n----- {title} (last {lines} lines) -----\n{tail}", file=sys.stderr)


@pytest.fixture(scope="module")
def kamailio() -> Iterator[Kamailio]:
    require_program(kamailio_binary(), "kamailio", "kamailio")
    pbx = Kamailio(users=TEST_USERS)
    try:
        pbx.start()
        yield pbx
    finally:
        pbx.stop()
        _dump_log(f"kamailio {pbx.hostport}", pbx.log_text())
        pbx.remove_files()


@pytest.fixture
def make_kamailio() -> Iterator[Callable[..., Kamailio]]:
    require_program(kamailio_binary(), "kamailio", "kamailio")
    started: list[Kamailio] = []

    def factory(users: dict[str, str] | None = None, **kwargs: Any) -> Kamailio:
        pbx = Kamailio(users=TEST_USERS if users is None else users, **kwargs)
        started.append(pbx)
        return pbx.start()

    try:
        yield factory
    finally:
        for pbx in started:
            pbx.stop()
            _dump_log(f"kamailio {pbx.hostport}", pbx.log_text())
            pbx.remove_files()


@pytest.fixture
def make_tone(tmp_path: Path) -> Callable[..., Path]:
    cache: dict[tuple[float, float, int], Path] = {}

    def factory(freq: float, seconds: float = 10.0, rate: int = 8000) -> Path:
        key = (freq, seconds, rate)
        if key not in cache:
            path = tmp_path / f"tone-{freq:g}Hz-{seconds:g}s-{rate}.wav"
            cache[key] = write_tone(path, freq, seconds, rate=rate)
        return cache[key]

    return factory


@pytest.fixture
def make_baresip(
    request: pytest.FixtureRequest, tmp_path: Path, make_tone: Callable[..., Path]
) -> Iterator[Callable[..., Baresip]]:
    """``make_baresip("1001", tone_hz=1000, auto_answer=False, pbx=None, **Baresip kwargs)``.

    The password defaults to the PBX's users table; ``tone_hz`` makes a 10 s sine source
    (use ``tone=`` for your own WAV). Returns the started instance (registered unless
    ``register=False``).
    """
    require_program(baresip_binary(), "baresip", "baresip")
    started: list[Baresip] = []

    def factory(
        ext: str,
        password: str | None = None,
        *,
        pbx: Kamailio | None = None,
        tone_hz: float | None = None,
        **kwargs: Any,
    ) -> Baresip:
        if pbx is None:
            pbx = request.getfixturevalue("kamailio")
        if tone_hz is not None and "tone" not in kwargs:
            kwargs["tone"] = make_tone(tone_hz)
        ua = Baresip(pbx, ext, password, workdir=tmp_path, **kwargs)
        started.append(ua)
        return ua.start()

    try:
        yield factory
    finally:
        for ua in started:
            ua.quit()  # all at once: their graceful waits overlap
        for ua in started:
            ua.stop()
            _dump_log(f"baresip {ua.name} events", "\n".join(ua.event_types()))
            _dump_log(f"baresip {ua.name}", ua.log_text())


@pytest.fixture
def make_sipp() -> Iterator[Callable[..., Sipp]]:
    """``make_sipp(scenario, target=None, **Sipp kwargs)`` -> a Sipp, not yet started."""
    require_program(sipp_binary(), "sipp", "sip-tester")
    created: list[Sipp] = []

    def factory(scenario: str | Path, target: str | None = None, **kwargs: Any) -> Sipp:
        sipp = Sipp(scenario, target, **kwargs)
        created.append(sipp)
        return sipp

    try:
        yield factory
    finally:
        for sipp in created:
            sipp.stop()
            sipp.remove_files()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A throwaway redis-server on a free port (services.md: tests leave the shared one alone)."""
    import subprocess
    import time

    import redis

    from tests.support.ports import free_port, release_ports

    port = free_port(udp=False)
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)
    release_ports(port)
