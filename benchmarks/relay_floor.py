"""What the least possible Python relay costs on this machine. Prints figures; no asserts.

The issue's target for the media bridge is <= 0.40 % of one core per call at N=100 (Janus, in
C: 0.37). This measures the floor under any relay written in Python on asyncio, so that the
bridge's own figure (benchmarks/bridge_fullstack.py) can be read against it: a forwarder
process doing nothing but what every relay must do per packet, N calls of two UDP sockets
each, 50 packets a second each way per call (the rate of 20 ms G.711 frames):

- `bare`: datagram_received -> sendto on the other socket, unchanged (no SRTP, no header
  rewrite, no statistics: less than any real relay does);
- `srtp`: the same plus what the browser leg cannot skip: SRTP unprotect towards the PBX and
  protect towards the browser (libsrtp through pylibsrtp, with phone.media.srtp's per-packet
  callables, AES-CM/HMAC-SHA1-80 as with a DTLS-SRTP browser);
- `rewrite`: `srtp` plus a header rewrite (struct unpack + pack of the fixed header, a
  sequence/timestamp offset), the least a relay that keeps its own stream does (RFC 3550 §8.2).

The load generator (this process) sends each call's packets at its own phase within the 20 ms
period (like independent phones), and one echo socket returns what the forwarder sends towards
the "PBX". With --pin the forwarder runs on the last CPU and this process on the others.
Printed per variant: the forwarder's CPU (utime+stime from /proc) in % of one core per call,
packets forwarded per second, and microseconds of CPU per forwarded packet.

    .venv/bin/python benchmarks/relay_floor.py [--n 100] [--seconds 10] [--pin]
        [--loop asyncio|uvloop]

Measured 2026-11-26 (N=100, --pin, 10 s), % of one core per call / us of CPU per packet:

    variant   asyncio's loop   uvloop
    bare      0.643 / 64       0.206 / 21
    srtp      0.830 / 83       0.285 / 29
    rewrite   0.905 / 91       0.332 / 33

So on asyncio's loop even a relay that does nothing but recvfrom -> sendto is over the
issue's 0.40 %; on uvloop the floor of a Python relay with SRTP and a header rewrite is 0.33 %.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEY = bytes(range(30))  # master key || salt; the same for every call (a benchmark)
RTP = struct.Struct("!BBHII")
pack, unpack = RTP.pack, RTP.unpack_from
VARIANTS = ("bare", "srtp", "rewrite")


def _session(outbound: bool) -> Any:
    import pylibsrtp

    policy = pylibsrtp.Policy(
        key=KEY,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND
        if outbound
        else pylibsrtp.Policy.SSRC_ANY_INBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    )
    return pylibsrtp.Session(policy=policy)


def _clock_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


# -- the forwarder (a subprocess) -------------------------------------------------------------


class _Side(asyncio.DatagramProtocol):
    def __init__(self, on_packet: Any) -> None:
        self.datagram_received = on_packet  # type: ignore[method-assign]


async def forwarder(variant: str, n: int, browser: tuple[str, int], echo: tuple[str, int]) -> None:
    from phone.media.srtp import rtp_protector, rtp_unprotector

    loop = asyncio.get_running_loop()
    ports = []
    for _ in range(n):
        unprotect = rtp_unprotector(_session(outbound=False))
        protect = rtp_protector(_session(outbound=True))
        legs: dict[str, Any] = {}

        if variant == "bare":

            def from_browser(data: bytes, addr: Any, legs: dict = legs) -> None:
                legs["pbx"].sendto(data, echo)

            def from_pbx(data: bytes, addr: Any, legs: dict = legs) -> None:
                legs["browser"].sendto(data, browser)

        elif variant == "srtp":

            def from_browser(data: bytes, addr: Any, legs: dict = legs, u: Any = unprotect) -> None:
                legs["pbx"].sendto(u(data), echo)

            def from_pbx(data: bytes, addr: Any, legs: dict = legs, p: Any = protect) -> None:
                legs["browser"].sendto(p(data), browser)

        else:

            def from_browser(data: bytes, addr: Any, legs: dict = legs, u: Any = unprotect) -> None:
                plain = u(data)
                b0, b1, seq, ts, _ = unpack(plain)
                head = pack(b0, b1, (seq + 7) & 0xFFFF, (ts + 160) & 0xFFFFFFFF, 0x1234)
                legs["pbx"].sendto(head + plain[12:], echo)

            def from_pbx(data: bytes, addr: Any, legs: dict = legs, p: Any = protect) -> None:
                b0, b1, seq, ts, _ = unpack(data)
                head = pack(b0, b1, (seq + 7) & 0xFFFF, (ts + 160) & 0xFFFFFFFF, 0x4321)
                legs["browser"].sendto(p(head + data[12:]), browser)

        b, _ = await loop.create_datagram_endpoint(
            lambda f=from_browser: _Side(f), local_addr=("127.0.0.1", 0)
        )
        p, _ = await loop.create_datagram_endpoint(
            lambda f=from_pbx: _Side(f), local_addr=("127.0.0.1", 0)
        )
        legs["browser"], legs["pbx"] = b, p
        ports.append(b.get_extra_info("sockname")[1])
    print(" ".join(map(str, ports)), flush=True)
    await asyncio.Event().wait()


# -- the load generator (this process) --------------------------------------------------------


async def load(
    proc: subprocess.Popen,
    n: int,
    seconds: float,
    ports: list[int],
    srtp: bool,
    browser: socket.socket,
    echo: socket.socket,
) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    payload = bytes(160)
    sessions = [_session(outbound=True) for _ in range(n)] if srtp else []
    seq = [0] * n
    received = {"browser": 0, "echo": 0}

    def on_echo() -> None:
        while True:
            try:
                data, addr = echo.recvfrom(2048)
            except BlockingIOError:
                return
            received["echo"] += 1
            echo.sendto(data, addr)

    def on_browser() -> None:
        while True:
            try:
                browser.recvfrom(2048)
            except BlockingIOError:
                return
            received["browser"] += 1

    loop.add_reader(echo.fileno(), on_echo)
    loop.add_reader(browser.fileno(), on_browser)

    async def pace() -> None:
        t0, k = loop.time(), 0
        while True:
            k += 1
            await asyncio.sleep(max(0.0, t0 + k * 0.001 - loop.time()))
            for i in range(k % 20, n, 20):
                seq[i] = (seq[i] + 1) & 0xFFFF
                data = RTP.pack(0x80, 0, seq[i], seq[i] * 160, 1000 + i) + payload
                if srtp:
                    data = sessions[i].protect(data)
                browser.sendto(data, ("127.0.0.1", ports[i]))

    pacer = asyncio.ensure_future(pace())
    await asyncio.sleep(2)  # warm up: every stream flowing
    before = dict(received)
    ticks0, t0 = _clock_ticks(proc.pid), time.monotonic()
    await asyncio.sleep(seconds)
    ticks, wall = _clock_ticks(proc.pid) - ticks0, time.monotonic() - t0
    after = dict(received)
    pacer.cancel()
    loop.remove_reader(echo.fileno())
    loop.remove_reader(browser.fileno())
    cpu = ticks / os.sysconf("SC_CLK_TCK") / wall  # share of one core
    forwarded = ((after["echo"] - before["echo"]) + (after["browser"] - before["browser"])) / wall
    return {"cpu": cpu, "pps": forwarded}


def run_variant(variant: str, args: argparse.Namespace) -> dict[str, float]:
    browser = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (browser, echo):
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    cmd = [
        sys.executable,
        __file__,
        "--serve",
        variant,
        "--n",
        str(args.n),
        "--browser",
        str(browser.getsockname()[1]),
        "--echo",
        str(echo.getsockname()[1]),
        "--loop",
        args.loop,
    ]
    if args.pin:
        cmd = ["taskset", "-c", str(os.cpu_count() - 1), *cmd]  # type: ignore[operator]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ports = [int(p) for p in proc.stdout.readline().split()]
        return asyncio.run(
            load(proc, args.n, args.seconds, ports, variant != "bare", browser, echo)
        )
    finally:
        proc.kill()
        proc.wait()
        browser.close()
        echo.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pin", action="store_true")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the forwarder's event loop (phone.worker.loop.new_event_loop)",
    )
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--browser", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--echo", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve = forwarder(args.serve, args.n, ("127.0.0.1", args.browser), ("127.0.0.1", args.echo))
        from phone.worker.loop import new_event_loop

        with asyncio.Runner(loop_factory=lambda: new_event_loop(args.loop)) as runner:
            runner.run(serve)
        return
    if args.pin:
        os.sched_setaffinity(0, set(range(max(1, (os.cpu_count() or 2) - 1))))
    print(
        f"relay floor: N={args.n} calls, 50 packets/s each way per call, "
        f"{args.seconds:.0f} s windows, {args.loop} loop{', forwarder pinned' if args.pin else ''}"
    )
    print(f"{'variant':<8} {'cpu % core/call':>16} {'pkts fwd/s':>11} {'us cpu/pkt':>11}")
    for variant in args.variants.split(","):
        r = run_variant(variant, args)
        per_call = r["cpu"] / args.n * 100
        per_packet = r["cpu"] / r["pps"] * 1e6 if r["pps"] else float("nan")
        print(f"{variant:<8} {per_call:>16.3f} {r['pps']:>11.0f} {per_packet:>11.1f}", flush=True)


if __name__ == "__main__":
    main()
