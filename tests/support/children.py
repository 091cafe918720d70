"""Last-resort cleanup of the programs the test helpers start.

Each helper stops its process in ``stop()`` (fixture finalizers call it, also on failure).
Two nets catch what is left:

- ``atexit``: when the interpreter exits without running the finalizers (Ctrl-C inside a
  fixture, a helper used outside a fixture and never stopped), every tracked child's
  process group is killed (each child was started in its own session).
- ``command()`` runs the program under ``setpriv --pdeathsig KILL`` (TERM) when started from the
  main thread, so even a SIGKILLed pytest takes its children along. (The kernel sends the
  signal when the *thread* that forked exits, so not from worker threads.)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import threading

_live: set[subprocess.Popen] = set()  # type: ignore[type-arg]
_lock = threading.Lock()


def command(cmd: list[str], signal_name: str = "KILL") -> list[str]:
    """``cmd``, wrapped so that the program gets ``signal_name`` when this process dies.

    KILL by default; Kamailio wants TERM (its main process then stops its workers).
    """
    setpriv = shutil.which("setpriv")
    if setpriv and threading.current_thread() is threading.main_thread():
        return [setpriv, "--pdeathsig", signal_name, "--", *cmd]
    return cmd


def track(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    with _lock:
        _live.add(proc)


def untrack(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    with _lock:
        _live.discard(proc)


@atexit.register
def _kill_leftovers() -> None:
    with _lock:
        procs = list(_live)
        _live.clear()
    for proc in procs:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.wait(2)


class ProgramHelper:
    """What Kamailio and Baresip helpers share: a child process ``proc`` writing ``log_path``,
    usable as a context manager (``start()`` on enter, ``stop()`` on exit)."""

    proc: subprocess.Popen | None  # type: ignore[type-arg]
    log_path: os.PathLike

    def start(self):  # pragma: no cover - each helper defines it
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - each helper defines it
        raise NotImplementedError

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            with open(self.log_path, errors="replace") as log:
                return log.read()
        except FileNotFoundError:
            return ""
