"""Free port selection for test programs on 127.0.0.1.

Picking port 0 and closing the socket again races with everything else started at the same
time (other fixtures, other pytest processes). Here a block of ports is

- chosen at random from a range below the Linux ephemeral range (32768-60999), so outgoing
  connections never steal it,
- bind-tested for UDP and TCP (SIP listens on both; baresip also binds TLS on port + 1),
- reserved across processes with an ``flock`` on a lock file per port, held until released
  or until the process exits (the kernel drops the lock then: no stale reservations).

A reservation does not bind the port; it only keeps other users of this module away until
the program we start has bound it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import socket
import tempfile
import threading
from pathlib import Path

PORT_RANGE = (20000, 30000)
# baresip RTP ports (set in its config) stay out of the SIP/control range above.
RTP_RANGE = (30000, 32700)

_LOCK_DIR = Path(tempfile.gettempdir()) / "browserphone-test-ports"
_held: dict[int, int] = {}  # port -> fd of its lock file
_mutex = threading.Lock()


def _bindable(host: str, port: int, kinds: tuple[int, ...]) -> bool:
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as s:
            # No SO_REUSEADDR: a TCP port in TIME_WAIT counts as taken (kamailio would fail).
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def _lock(port: int) -> int | None:
    _LOCK_DIR.mkdir(mode=0o777, exist_ok=True)
    fd = os.open(_LOCK_DIR / f"{port}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def reserve_ports(
    count: int = 1,
    *,
    host: str = "127.0.0.1",
    udp: bool = True,
    tcp: bool = True,
    attempts: int = 200,
) -> int:
    """Reserve ``count`` consecutive free ports; return the first one.

    Every port in the block is bind-tested (UDP and/or TCP) and locked. Release with
    :func:`release_ports` (or let the process exit).
    """
    kinds = tuple(k for k, on in ((socket.SOCK_DGRAM, udp), (socket.SOCK_STREAM, tcp)) if on)
    lo, hi = PORT_RANGE
    rng = random.SystemRandom()
    with _mutex:
        for _ in range(attempts):
            first = rng.randrange(lo, hi - count)
            fds: list[int] = []
            ok = True
            for port in range(first, first + count):
                if port in _held:
                    ok = False
                    break
                fd = _lock(port)
                if fd is None:
                    ok = False
                    break
                fds.append(fd)
                if not _bindable(host, port, kinds):
                    ok = False
                    break
            if ok:
                for port, fd in zip(range(first, first + count), fds, strict=True):
                    _held[port] = fd
                return first
            for fd in fds:
                os.close(fd)
    raise RuntimeError(f"no block of {count} free ports in {PORT_RANGE} on {host}")


def release_ports(first: int, count: int = 1) -> None:
    """Drop the reservation of ``count`` ports starting at ``first`` (idempotent)."""
    with _mutex:
        for port in range(first, first + count):
            fd = _held.pop(port, None)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


def free_port(*, host: str = "127.0.0.1", udp: bool = True, tcp: bool = True) -> int:
    """Reserve one free port (UDP and TCP by default)."""
    return reserve_ports(1, host=host, udp=udp, tcp=tcp)
