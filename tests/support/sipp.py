"""Run SIPp (Debian ``sip-tester``, SIPp 3.6) scenarios on free ports of 127.0.0.1.

    res = run_sipp("register.xml", pbx.hostport, service="1001",
                   auth=("1001", "pw1001"), keys={"domain": pbx.domain})
    assert res.ok and res.responses == [401, 200]

    uas = Sipp("uas_answer.xml")          # background UAS; uas.port is where it listens
    uas.start()
    ...                                    # make something call it
    res = uas.wait(timeout=20)

Scenario files live in ``tests/support/sipp/``. Each run gets its own directory for SIPp's
trace files; the result carries the exit status, the final statistics row (``-trace_stat``)
and the status codes of all responses SIPp received (from ``-trace_msg``).
SIPp exit status: 0 all calls succeeded, 1 at least one failed, 97 exit on internal command,
99 normal exit without calls processed, -1/255 fatal error.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import children
from tests.support.ports import release_ports, reserve_ports

SCENARIO_DIR = Path(__file__).resolve().parent / "sipp"


def sipp_binary() -> str | None:
    return shutil.which("sipp")


def scenario_path(name: str | Path) -> Path:
    path = Path(name)
    return path if path.is_absolute() else SCENARIO_DIR / path


@dataclass
class SippResult:
    returncode: int
    stdout: str
    stderr: str
    duration: float
    stats: dict[str, str] = field(default_factory=dict)
    responses: list[int] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    messages_log: str = ""
    error_log: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def _stat(self, name: str) -> int:
        value = self.stats.get(f"{name}(C)", "0")
        return int(value) if value.isdigit() else 0

    @property
    def successful_calls(self) -> int:
        return self._stat("SuccessfulCall")

    @property
    def failed_calls(self) -> int:
        return self._stat("FailedCall")


class Sipp:
    """One SIPp process. ``target`` is ``host:port`` for a UAC; None for a UAS."""

    def __init__(
        self,
        scenario: str | Path,
        target: str | None = None,
        *,
        service: str | None = None,
        auth: tuple[str, str] | None = None,
        keys: dict[str, str] | None = None,
        calls: int = 1,
        transport: str = "u1",
        timeout: float = 30.0,
        port: int | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        if sipp_binary() is None:
            raise RuntimeError("sipp binary not found (apt-get install sip-tester)")
        self.scenario = scenario_path(scenario)
        self.target = target
        self.service = service
        self.auth = auth
        self.keys = dict(keys or {})
        self.calls = calls
        self.transport = transport
        self.timeout = timeout
        self.extra_args = list(extra_args or [])
        self.dir = Path(tempfile.mkdtemp(prefix="sipp-"))
        self._reserved: list[tuple[int, int]] = []
        if port is None:
            port = reserve_ports(1)
            self._reserved.append((port, 1))
        self.port = port
        # SIPp's RTP echo socket(s): -mp (audio) and -mp + 2 (video), bound at start-up.
        self.media_port = reserve_ports(4)
        self._reserved.append((self.media_port, 4))
        self.proc: subprocess.Popen[str] | None = None
        self._started = 0.0

    def command(self) -> list[str]:
        binary = sipp_binary()
        assert binary is not None
        cmd = [binary]
        if self.target:
            cmd.append(self.target)
        cmd += [
            "-sf",
            str(self.scenario),
            "-i",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-mi",
            "127.0.0.1",
            "-mp",
            str(self.media_port),
            "-t",
            self.transport,
            "-m",
            str(self.calls),
            "-timeout",
            f"{int(self.timeout)}s",
            "-timeout_error",
            "-nostdin",
            "-trace_msg",
            "-message_file",
            str(self.dir / "messages.log"),
            "-trace_stat",
            "-stf",
            str(self.dir / "stats.csv"),
            "-trace_err",
            "-error_file",
            str(self.dir / "errors.log"),
        ]
        if self.service:
            cmd += ["-s", self.service]
        if self.auth:
            cmd += ["-au", self.auth[0], "-ap", self.auth[1]]
        keys = {
            "domain": "127.0.0.1",
            "expires": "300",
            "contact_host": "127.0.0.1",
            "contact_port": str(self.port),
        } | self.keys
        for k, v in keys.items():
            cmd += ["-key", k, str(v)]
        return cmd + self.extra_args

    def start(self) -> Sipp:
        self._started = time.monotonic()
        self.proc = subprocess.Popen(
            children.command(self.command()),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.dir,
            start_new_session=True,
        )
        children.track(self.proc)
        return self

    def wait(self, timeout: float | None = None) -> SippResult:
        assert self.proc is not None, "start() first"
        try:
            out, err = self.proc.communicate(timeout=timeout or self.timeout + 10)
        except subprocess.TimeoutExpired:
            self.kill()
            out, err = self.proc.communicate()
        children.untrack(self.proc)
        duration = time.monotonic() - self._started
        result = SippResult(self.proc.returncode, out, err, duration)
        self._collect(result)
        self._release()
        return result

    def run(self) -> SippResult:
        return self.start().wait()

    async def wait_async(self, timeout: float | None = None) -> SippResult:
        """:meth:`wait` without blocking the running event loop."""
        return await asyncio.to_thread(self.wait, timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        """Kill if still running and release ports (safe in finalizers)."""
        self.kill()
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
                self.proc.communicate(timeout=5)
            children.untrack(self.proc)
        self._release()

    def _release(self) -> None:
        for first, count in self._reserved:
            release_ports(first, count)
        self._reserved = []

    def _collect(self, result: SippResult) -> None:
        msgs = self.dir / "messages.log"
        if msgs.exists():
            text = msgs.read_text(errors="replace")
            result.messages_log = text
            # Each trace entry: a "---- <time>" line, "UDP message received [n] bytes :",
            # then the SIP message.
            for block in re.split(r"^-{10,}.*$", text, flags=re.M):
                lines = [line for line in block.strip().splitlines() if line.strip()]
                if len(lines) < 2 or "received" not in lines[0]:
                    continue
                first = lines[1]
                m = re.match(r"SIP/2\.0 (\d{3})", first)
                if m:
                    result.responses.append(int(m.group(1)))
                elif first.strip():
                    result.requests.append(first.split(" ", 1)[0])
        stats = self.dir / "stats.csv"
        if stats.exists():
            rows = list(csv.reader(stats.read_text(errors="replace").splitlines(), delimiter=";"))
            if len(rows) >= 2:
                result.stats = dict(zip(rows[0], rows[-1], strict=False))
        errors = self.dir / "errors.log"
        if errors.exists():
            result.error_log = errors.read_text(errors="replace")

    def remove_files(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def run_sipp(scenario: str | Path, target: str | None = None, **kwargs: Any) -> SippResult:
    """Run a scenario to completion (see :class:`Sipp` for the arguments)."""
    sipp = Sipp(scenario, target, **kwargs)
    try:
        return sipp.run()
    finally:
        sipp.stop()
        sipp.remove_files()


async def run_sipp_async(
    scenario: str | Path, target: str | None = None, **kwargs: Any
) -> SippResult:
    """:func:`run_sipp` in a worker thread, for asyncio tests."""
    return await asyncio.to_thread(run_sipp, scenario, target, **kwargs)
