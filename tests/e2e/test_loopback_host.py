"""The whole call path on a host whose only network is the loopback interface (issue 12).

aioice, under aiortc, never offers 127.0.0.1 on its own: on such a host the page's peer
connection would find no candidate pair and stay silent. ICE_HOST_ADDRESSES=127.0.0.1 (read by
phone.media_network at sipworker start) is the deployment's answer. The test runs the audio tests
of test_audio.py again in a fresh network namespace (`unshare --net`, root only) holding nothing
but `lo`: the portal with its embedded sipworker on SQLite (PostgreSQL's socket is in the other
namespace), Kamailio, baresip and Chromium all live in there. The same run without the setting
must fail, or the namespace proves nothing.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
AUDIO_TESTS = [
    "tests/e2e/test_audio.py::test_it_carries_audio_both_ways_on_an_outgoing_call",
    "tests/e2e/test_audio.py::test_it_carries_audio_both_ways_on_an_incoming_call",
]


def can_unshare() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


requires_netns = pytest.mark.skipif(
    not can_unshare(), reason="a private network namespace needs root (CI runs as root)"
)


def in_loopback_namespace(tmp_path: Path, *command: str, **env: str) -> subprocess.CompletedProcess:
    """Run `command` in a new network namespace with only `lo`, brought up."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ICE_")}
    environment.pop("REDIS_URL", None)
    environment.pop("PYTEST_CURRENT_TEST", None)
    environment |= {"DATABASE_URL": f"sqlite:///{tmp_path / 'portal.sqlite3'}", **env}
    script = 'ip link set lo up && exec "$@"'
    return subprocess.run(
        ["unshare", "--net", "sh", "-c", script, "sh", *command],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def run_audio_tests(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return in_loopback_namespace(
        tmp_path, sys.executable, "-m", "pytest", *AUDIO_TESTS, "-p", "no:cacheprovider",
        "-q", "-x", **env,
    )  # fmt: skip


@requires_netns
def test_the_namespace_has_only_the_loopback_interface(tmp_path):
    listing = in_loopback_namespace(tmp_path, "ip", "-o", "addr", "show")
    assert listing.returncode == 0, listing.stderr
    interfaces = {line.split()[1] for line in listing.stdout.splitlines()}
    assert interfaces == {"lo"}, listing.stdout


@requires_netns
def test_calls_carry_audio_both_ways_on_a_loopback_only_host(tmp_path):
    run = run_audio_tests(tmp_path, ICE_HOST_ADDRESSES="127.0.0.1")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert f"{len(AUDIO_TESTS)} passed" in run.stdout


@requires_netns
def test_without_the_setting_the_page_hears_nothing_there(tmp_path):
    run = run_audio_tests(tmp_path)
    assert run.returncode != 0, "audio worked without ICE_HOST_ADDRESSES: the test proves nothing"
    # ... and for the reason named: the page's peer connection never connected.
    assert "document.body.dataset.media === 'connected'" in run.stdout, run.stdout[-6000:]
