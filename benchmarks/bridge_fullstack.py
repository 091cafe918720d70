"""N concurrent bridged calls through the whole production server path. Prints figures; no asserts.

    fake browsers (aiortc)  --Redis channel layer-->  manage.py sipworker  --SIP-->  Kamailio
    (this process: act as                          (subprocess, measured)          |
     PhoneConsumers too)    <====DTLS-SRTP=====>   MediaBridge <-> RtpLeg <--RTP--> SIPp UAS 9000
                                                                                    (-rtp_echo)

What runs (all started here, all stopped on exit, Ctrl-C or error):

- PostgreSQL: a throwaway database `browserphone_bridgebench` on 127.0.0.1:5432 (trust auth),
  migrated with `manage.py migrate`; one tenant whose PBX domain / outbound proxy point at
- Kamailio (tests/support/pbx.py) with users 1000..1099 and 9000;
- SIPp as the far end (benchmarks/sipp/uas_echo.xml): a UAS registered as 9000 that answers at
  once and echoes every RTP datagram back to its sender (`-rtp_echo`, one media port for all);
- our own redis-server on a free port (not the shared 6379) as the channels_redis layer;
- `manage.py sipworker` with REDIS_URL/DATABASE_URL set: the process whose CPU is measured
  (utime + stime from /proc/<pid>/stat, all its threads).

This process plays N browsers and their PhoneConsumers: per session a process-local channel
(`layer.new_channel()`), `worker.attach` -> wait for `registration` registered -> an aiortc
RTCPeerConnection offers PCMU first (non-trickle) in `worker.command webrtc.offer` -> the
`webrtc.answer` is applied and ICE/DTLS connects -> `worker.command dial {number: 9000}`.
Every 20 ms, each at its own phase of the period (one shared 1 ms timer; --in-step: all at
once), each browser sends a 1000 Hz PCMU frame whose first 6 bytes carry
(call index, counter); in passthrough the payload crosses browser -> bridge -> leg -> SIPp echo
-> leg -> bridge -> browser untouched, so echoed frames and their round trip are counted exactly.
The browsers use aiortc only for ICE/DTLS/SRTP (as benchmarks/bridge.py does), so the load they
add to this process stays small; still, on a small machine the load shares the CPUs with the
sipworker: the table shows this process's and SIPp's CPU too.

ICE: aioice leaves 127.0.0.1 out of its host candidates. The sipworker runs production code
unpatched, so both ends use the machine's non-loopback address(es) (here eth0), which pair with
each other; a machine with only loopback cannot run this benchmark.

Per N it prints: call setup (dial sent -> `call` state incall at the session channel) p50/p95,
the sipworker's CPU per call (ms of CPU per second of call) and the resulting calls per core,
frames received/echoed per call per second, gaps > 60 ms between packets arriving at the
browsers (count, max), the round trip the sipworker adds p50/p95/p99 (tagged frames through
the echo and back; SIPp's echo and the loopback network add ~nothing, so the round trip is
what the worker adds), how busy the whole machine was, and the sipworker's CPU spent on setting
the calls up. Target (the issue): >= 100 calls per core with no gap > 60 ms in passthrough
mode. --moh N,... runs again with every call put on hold after it connects (the worker's own
hold: re-INVITE, music on hold to SIPp on the 20 ms tick, the page's bridge carries nothing):
the sipworker's CPU per call when it produces the audio of every call.

--workers 1,2 runs everything again with that many sipworker processes (each page claims its
line's lease as PhoneConsumer does, so lines spread over the least loaded workers; CPU is summed
over all of them): calls per core and setup p95 side by side. --failover N (with 2+ workers)
attaches N idle lines, kills -9 the worker holding most, and has each of its pages re-claim and
re-attach as PhoneConsumer does after a lost heartbeat: seconds from the kill until each line is
registered again on a survivor, and lines re-registered per second once the leases lapsed.

--pin puts the sipworker(s) on the last CPU and everything else started here (this process,
SIPp, Kamailio, redis) on the others (sched_setaffinity before anything starts; the workers
under `taskset`), as the issue measured: the worker's CPU is then not shared with its load
generator (other tenants of the machine still are: "all CPUs busy" says how busy it was).
The fake browsers take their SRTP packets at the socket and send synchronously, as the bridge
does (aiortc's own receive path for 100 browsers starved this process on 2 cores and its
stalls read as the worker's round trip).

Setup is split (the "PBX" and "ours" figures): the worker runs through
benchmarks/sipworker_probe.py, which timestamps each INVITE it sends and each final response
it gets, and the `dial` command leaving Redis and the `call` incall message entering it (same
monotonic clock as this process). PBX = every INVITE's wait for its final response (Kamailio,
its 407 challenge, SIPp); ours = dial -> incall at the page minus that; "in the worker" = the
same from the worker's own view (dial out of Redis -> incall into Redis minus the PBX's part),
so the channel layer and this process's own lag are left out.

--gateway janus measures Janus 1.1.2's SIP plugin (Debian's `janus` package, the C gateway the
issue compared us with) in the sipworker's place, on the same machine, CPU, PBX, far end and
browsers, so that the two are compared side by side rather than against figures from another
machine. Each browser speaks Janus's WebSocket API (janus-protocol) as janus.js would: one
Janus session and SIP-plugin handle per page, `register` with the line's credentials (Kamailio
as registrar and outbound proxy), then `call` with the browser's offer. Its setup is `call`
sent -> `accepted` received (the PBX's 200 OK forwarded with Janus's answer), the counterpart
of dial -> incall; the CPU is the janus process's (all its threads). Janus has no call-less
WebRTC, so ICE/DTLS come up after `accepted`, not before the dial as ours do; neither setup
figure includes them. The "sipworker"-named figures in the output then describe Janus, and the
PBX/ours split and loop-stall lines (our probe's) are empty.

--profile DIR samples the worker(s) with py-spy (--nonblocking, 200 Hz) over each steady
state and prints the top functions by own and inclusive share. --loop asyncio runs the workers
on asyncio's own event loop instead of production's default, uvloop (phone/worker/loop.py).

    .venv/bin/python benchmarks/bridge_fullstack.py [--n 1,10,25,50,100] [--moh 10,50]
        [--seconds 10] [--dial-rate 25] [--workers 1,2] [--failover 100] [--pin]
        [--profile DIR] [--loop uvloop|asyncio] [--gateway ours|janus]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pylibsrtp  # noqa: E402
from aioice.ice import StunProtocol  # noqa: E402
from aiortc import (  # noqa: E402
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp  # noqa: E402

from phone.media import g711  # noqa: E402
from phone.media.bridge import _browser_sender, _drive, _SilentTrack  # noqa: E402
from phone.media.rtp import RtpParseError, payload_bounds  # noqa: E402
from phone.media.tones import SineTone  # noqa: E402
from tests.support import children  # noqa: E402
from tests.support.pbx import Kamailio, kamailio_binary  # noqa: E402
from tests.support.ports import free_port, release_ports  # noqa: E402
from tests.support.sipp import Sipp, run_sipp, sipp_binary  # noqa: E402

PG_SERVER = "postgres://postgres@127.0.0.1:5432"
# Per run: other checkouts on the same machine run this benchmark too (DROP ... WITH (FORCE)).
DB_NAME = f"browserphone_bridgebench_{os.getpid()}"
ECHO_EXT, ECHO_PW = "9000", "pw9000"
FIRST_EXT = 1000
MAX_USERS = 100
SCENARIO = Path(__file__).resolve().parent / "sipp" / "uas_echo.xml"
PROBE = Path(__file__).resolve().parent / "sipworker_probe.py"
GAP = 0.060
TAG = struct.Struct("!HI")  # call index, frame counter: the first 6 bytes of a PCMU payload
_RTP = struct.Struct("!BBHII")
CLK_TCK = os.sysconf("SC_CLK_TCK")
STEP_TIMEOUT = 30.0  # seconds for any one step of one session
GATE = 20  # sessions with a request outstanding at the worker at once (attach, offer phases)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a live process."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return float("nan")
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # stat fields 14 and 15


def proc_rss_mib(pid: int) -> float:
    """Resident memory of a live process, MiB (VmRSS)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return float("nan")


def proc_sys_cpu(pid: int) -> float:
    """CPU seconds the process spent in the kernel (system time, all threads)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return float("nan")
    return int(data[data.rindex(")") + 2 :].split()[12]) / CLK_TCK


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs together, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def pbx_part(events: list[tuple[str, float]], start: float, end: float) -> float | None:
    """Seconds within [start, end] during which an INVITE of ours waited at the PBX for its
    final response (first transmission to final response; a 407 challenge and the INVITE
    that answers it are two such waits, the worker's work between them is its own)."""
    total, pending, seen = 0.0, None, False
    for kind, at in events:
        if not start <= at <= end:
            continue
        if kind == "invite":
            pending = at if pending is None else pending  # a retransmission: the first counts
        elif kind == "final" and pending is not None:
            total += at - pending
            pending, seen = None, True
    return total if seen else None


def profile_summary(path: Path, top: int = 25) -> str:
    """Self and inclusive shares of a py-spy --format raw (collapsed stacks) profile."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r" \(([^)]*/)?", " (", f) for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return "  (no samples)"
    rows = [f"  {total} samples; self:"]
    rows += [f"  {c * 100 / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    rows.append("  inclusive:")
    rows += [f"  {c * 100 / total:5.1f}%  {f}" for f, c in incl.most_common(top * 2)]
    return "\n".join(rows)


def extension(i: int) -> str:
    return str(FIRST_EXT + i)


# -- the processes around the sipworker ---------------------------------------------------------


class Stack:
    """Everything started for the run; stop() undoes all of it (idempotent, never raises)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bridgebench-"))
        self.redis: subprocess.Popen[bytes] | None = None
        self.redis_port = 0
        self.pbx: Kamailio | None = None
        self.sipp: Sipp | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.worker_logs: list[Path] = []
        self.sip_times: list[Path] = []
        self.worker_cpu = 0  # --pin: the CPU of the sipworkers (this process: the others)
        self.db_created = False
        self.env: dict[str, str] = {}
        self.janus_port = 0

    # redis --------------------------------------------------------------------------------

    def start_redis(self) -> None:
        self.redis_port = free_port(udp=False)
        cmd = [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(self.redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.tmp),
        ]
        self.redis = subprocess.Popen(
            children.command(cmd),
            stdin=subprocess.DEVNULL,
            stdout=open(self.tmp / "redis.log", "wb"),  # noqa: SIM115 - the child owns it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        children.track(self.redis)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.redis_port), timeout=0.5) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING")

    # database -----------------------------------------------------------------------------

    def psql(self, sql: str) -> None:
        subprocess.run(
            ["psql", f"{PG_SERVER}/postgres", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
            env={**os.environ, "PGOPTIONS": "-c client_min_messages=warning"},
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def create_database(self) -> None:
        self.psql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        self.psql(f"CREATE DATABASE {DB_NAME}")
        self.db_created = True
        subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"],
            env=self.env,
            cwd=ROOT,
            check=True,
        )

    # kamailio + sipp ----------------------------------------------------------------------

    def start_pbx(self) -> None:
        users = {extension(i): f"pw{extension(i)}" for i in range(MAX_USERS)}
        users[ECHO_EXT] = ECHO_PW
        self.pbx = Kamailio(users=users)
        self.pbx.start()

    def start_far_end(self) -> None:
        assert self.pbx is not None
        self.sipp = Sipp(
            hold_scenario(self.tmp),
            calls=1_000_000,
            timeout=3600,
            extra_args=["-rtp_echo"],
        )
        # No per-message trace for hundreds of calls: drop -trace_msg from the command line.
        command = self.sipp.command
        self.sipp.command = lambda: [a for a in command() if a != "-trace_msg"]  # type: ignore[method-assign]
        self.sipp.start()
        reg = run_sipp(
            "register.xml",
            self.pbx.hostport,
            service=ECHO_EXT,
            auth=(ECHO_EXT, ECHO_PW),
            keys={
                "domain": self.pbx.domain,
                "contact_port": str(self.sipp.port),
                "expires": "3600",
            },
        )
        if not reg.ok:
            raise RuntimeError(f"SIPp could not register {ECHO_EXT}: {reg.stderr[-1000:]}")

    # the sipworker ------------------------------------------------------------------------

    def start_workers(self, count: int) -> None:
        """`count` sipworker processes; each reads its own channel and takes the leases of the
        lines a page claims for it (phone.signalling.owners: the least loaded worker)."""
        for _ in range(count):
            log = self.tmp / f"sipworker-{len(self.worker_logs)}.log"
            times = self.tmp / f"sip-times-{len(self.worker_logs)}.log"
            self.sip_times.append(times)
            cmd = [sys.executable, str(PROBE)]  # manage.py sipworker + SIP timestamps
            if self.args.pin:
                cmd = [shutil.which("taskset") or "taskset", "-c", str(self.worker_cpu), *cmd]
            proc = subprocess.Popen(
                children.command(cmd),
                env={
                    **self.env,
                    "SIP_TIMES": str(times),
                    "SIPWORKER_EVENT_LOOP": self.args.loop,
                },
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=open(log, "wb"),  # noqa: SIM115 - the child owns it
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            children.track(proc)
            self.workers.append(proc)
            self.worker_logs.append(log)
        for proc, log in zip(self.workers[-count:], self.worker_logs[-count:], strict=True):
            deadline = time.monotonic() + 30
            while not re.search(r" on channel (\S+)", log.read_text()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sipworker did not start:\n{self.worker_log_tail()}")
                time.sleep(0.1)

    def start_janus(self) -> None:
        """--gateway janus: Janus's SIP plugin (Debian's janus) in place of the sipworker, on
        the same CPU, PBX and far end; its process (all threads) is what the figures measure."""
        binary = shutil.which("janus")
        if binary is None:
            raise RuntimeError("janus is not installed (apt-get install janus)")
        import aioice.ice

        address = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)[0]
        conf = self.tmp / "janus"
        conf.mkdir()
        self.janus_port = free_port()
        rtp_min, _, rtp_max = self.args.rtp_ports.partition("-")
        middle = (int(rtp_min) + int(rtp_max)) // 2
        for name, text in janus_config(
            conf, self.janus_port, address, (int(rtp_min), middle), (middle + 1, int(rtp_max))
        ).items():
            (conf / name).write_text(text)
        log = self.tmp / "janus.log"
        cmd = [binary, "-F", str(conf), "-C", str(conf / "janus.jcfg"), "-L", str(log)]
        if self.args.pin:
            cmd = [shutil.which("taskset") or "taskset", "-c", str(self.worker_cpu), *cmd]
        proc = subprocess.Popen(
            children.command(cmd),
            cwd=self.tmp,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        children.track(proc)
        self.workers.append(proc)
        self.worker_logs.append(log)
        deadline = time.monotonic() + 30
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.janus_port), timeout=0.5),
            ):
                return
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"janus did not start:\n{self.worker_log_tail()}")
            time.sleep(0.1)

    def worker_pids(self) -> list[int]:
        return [proc.pid for proc in self.workers if proc.poll() is None]

    def workers_cpu(self) -> float:
        """CPU seconds of every live sipworker together."""
        return sum(proc_cpu(pid) for pid in self.worker_pids())

    def worker_log_tail(self, lines: int = 40) -> str:
        tails = []
        for log in self.worker_logs:
            with contextlib.suppress(FileNotFoundError):
                text = log.read_text(errors="replace")
                tails.append(f"--- {log.name}\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(tails)

    def loop_stalls(self) -> list[tuple[str, float, float]]:
        """("lag", when, seconds late) for each stall > 20 ms of a worker's event loop ("busy"
        when the loop's thread ran for most of it), and ("gc", when, seconds) for each garbage
        collection over 5 ms (the probe)."""
        stalls = []
        for path in self.sip_times:
            with contextlib.suppress(FileNotFoundError):
                for line in path.read_text().splitlines():
                    if line.startswith(("lag ", "gc ")):
                        kind, at, late, extra = [*line.split(), "0"][:4]
                        if kind == "lag" and float(extra) > float(late) / 2:
                            kind = "busy"  # the worker's thread ran most of the stall
                        stalls.append((kind, float(at), float(late)))
        return stalls

    def invite_times(self) -> dict[str, list[tuple[str, float]]]:
        """Per From user, the INVITEs the workers sent and the final responses they received
        (benchmarks/sipworker_probe.py), in order: [("invite", t), ("final", t), ...]."""
        events: dict[str, list[tuple[str, float]]] = {}
        for path in self.sip_times:
            with contextlib.suppress(FileNotFoundError):
                for line in path.read_text().splitlines():
                    if line.startswith(("lag ", "gc ")):
                        continue
                    kind, user, at = line.split()[:3]
                    events.setdefault(user, []).append((kind, float(at)))
        return events

    def worker_errors(self) -> list[str]:
        return [
            line
            for log in self.worker_logs
            for line in log.read_text(errors="replace").splitlines()
            if "ERROR" in line or "Traceback" in line
        ]

    def stop_workers(self) -> float | None:
        """SIGTERM (they unregister their lines), SIGKILL after 30 s; returns the seconds the
        slowest took (None if one had to be killed)."""
        procs, self.workers = self.workers, []
        started = time.monotonic()
        took: float | None = 0.0
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(max(0.1, started + 30 - time.monotonic()))
                if took is not None:
                    took = time.monotonic() - started
            except subprocess.TimeoutExpired:
                took = None
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            children.untrack(proc)
        return took

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_workers()
        if self.sipp is not None:
            with contextlib.suppress(Exception):
                self.sipp.stop()
                self.sipp.remove_files()
            self.sipp = None
        if self.pbx is not None:
            with contextlib.suppress(Exception):
                self.pbx.stop()
                self.pbx.remove_files()
            self.pbx = None
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.terminate()
                try:
                    self.redis.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(self.redis.pid, signal.SIGKILL)
                    self.redis.wait(5)
            children.untrack(self.redis)
            release_ports(self.redis_port)
            self.redis = None
        if self.db_created:
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
            with contextlib.suppress(Exception):
                self.psql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
            self.db_created = False
        if self.args.log_dir:
            with contextlib.suppress(OSError):
                shutil.copytree(self.tmp, self.args.log_dir, dirs_exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


_REINVITE_OK = """
  <label id="1"/>
  <recv request="INVITE" optional="true" next="2"/>
  <recv request="BYE" next="3"/>
  <label id="2"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      [last_Record-Route:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 53655765 2353687638 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
      a=ptime:20
      a=recvonly

    ]]>
  </send>
  <recv request="ACK" next="1"/>
  <label id="3"/>
"""


def hold_scenario(directory: Path) -> Path:
    """benchmarks/sipp/uas_echo.xml, also answering a re-INVITE (hold: --moh) with recvonly;
    SIPp's -rtp_echo then returns the music on hold to our leg."""
    text = SCENARIO.read_text()
    bye = '  <recv request="BYE">\n  </recv>\n'
    if bye not in text:
        raise RuntimeError(f"{SCENARIO} changed: cannot add the re-INVITE branch")
    path = directory / "uas_echo_hold.xml"
    path.write_text(text.replace(bye, _REINVITE_OK, 1))
    return path


def populate(pbx: Kamailio) -> list[int]:
    """Tenant + MAX_USERS staff users with SIP accounts 1000..; returns their user ids."""
    from django.contrib.auth import get_user_model

    from portal.models import Profile, SipAccount, Tenant

    tenant = Tenant.objects.create(
        code="bench", name="Bridge bench", pbx_domain=pbx.domain, outbound_proxy=pbx.hostport
    )
    user_model = get_user_model()
    users = []
    for i in range(MAX_USERS):
        user = user_model(username=f"bench{extension(i)}")
        user.set_unusable_password()  # hashing 100 real passwords would take half a minute
        users.append(user)
    users = user_model.objects.bulk_create(users)
    Profile.objects.bulk_create(
        Profile(user=u, tenant=tenant, display_name=f"Bench {extension(i)}")
        for i, u in enumerate(users)
    )
    SipAccount.objects.bulk_create(
        SipAccount(
            tenant=tenant, user=u, slot=1, extension=extension(i), password=f"pw{extension(i)}"
        )
        for i, u in enumerate(users)
    )
    return [u.pk for u in users]


JANUS_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")


def janus_config(
    conf: Path, ws_port: int, address: str, ice_ports: tuple[int, int], sip_ports: tuple[int, int]
) -> dict[str, str]:
    """Janus 1.1 configuration files: the SIP plugin and the WebSocket transport only, ICE on
    `address` alone (the browsers' host candidates are there too), no logs beyond warnings."""
    plugins = ",".join(
        p.name for p in (JANUS_LIB / "plugins").glob("libjanus_*.so") if p.name != "libjanus_sip.so"
    )
    transports = ",".join(
        p.name
        for p in (JANUS_LIB / "transports").glob("libjanus_*.so")
        if p.name != "libjanus_websockets.so"
    )
    return {
        "janus.jcfg": f"""general: {{
    configs_folder = "{conf}"
    plugins_folder = "{JANUS_LIB / "plugins"}"
    transports_folder = "{JANUS_LIB / "transports"}"
    events_folder = "{JANUS_LIB / "events"}"
    loggers_folder = "{JANUS_LIB / "loggers"}"
    debug_level = 3
    session_timeout = 120
}}
plugins: {{ disable = "{plugins}" }}
transports: {{ disable = "{transports}" }}
events: {{ broadcast = false }}
loggers: {{ disable = "libjanus_jsonlog.so" }}
media: {{ rtp_port_range = "{ice_ports[0]}-{ice_ports[1]}" }}
nat: {{ ice_enforce_list = "{address}" }}
""",
        "janus.transport.websockets.jcfg": f"""general: {{
    json = "compact"
    ws = true
    ws_port = {ws_port}
    ws_ip = "127.0.0.1"
    wss = false
}}
admin: {{ admin_ws = false admin_wss = false }}
""",
        "janus.plugin.sip.jcfg": f"""general: {{
    local_ip = "127.0.0.1"
    keepalive_interval = 120
    behind_nat = false
    register_ttl = 3600
    rtp_port_range = "{sip_ports[0]}-{sip_ports[1]}"
    events = false
}}
""",
    }


# -- fake browsers that also play their PhoneConsumer ---------------------------------------------


class Session:
    """One phone page: its channel-layer session (as PhoneConsumer would have) and its browser's
    aiortc peer connection (media only through ICE/DTLS/SRTP, no aiortc media pipeline)."""

    def __init__(self, bench: Bench, index: int, user_id: int) -> None:
        self.bench = bench
        self.index = index
        self.user_id = user_id
        self.channel = ""
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.seen = 0
        self.arrived = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.transceiver = self.pc.addTransceiver(_SilentTrack(), direction="sendrecv")
        caps = RTCRtpSender.getCapabilities("audio").codecs
        self.transceiver.setCodecPreferences(
            [c for name in ("PCMU", "PCMA", "opus") for c in caps if c.mimeType == f"audio/{name}"]
        )
        self.transceiver.receiver._handle_rtp_packet = self.on_rtp  # type: ignore[method-assign]
        self.dtls: Any = None
        self.send_rtp: Any = None
        self.pt = 0
        self.ssrc = 0
        self.seq, self.ts = 1000, 0
        self.counter = 0
        self.sent_at: dict[int, float] = {}
        self.setup: float | None = None
        self.dialled: tuple[float, float] | None = None
        self.call_id: str | None = None
        self.worker_channel = ""
        self.failure = ""
        self.owner = ""
        self.reset()

    def reset(self) -> None:
        self.received = 0
        self.echoed = 0
        self.rtts: list[float] = []
        self.gaps = 0
        self.max_gap = 0.0
        self.last: float | None = None

    # channel layer ------------------------------------------------------------------------

    async def open(self) -> None:
        layer = self.bench.layer
        self.channel = await layer.new_channel()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        layer = self.bench.layer
        while True:
            try:
                event = await layer.receive(self.channel)
            except Exception:  # see --plain-redis-url: a read timeout must not end the page
                self.bench.receive_errors += 1
                await asyncio.sleep(0.1)
                continue
            if event.get("type") == "phone.message":
                self.messages.append((time.perf_counter(), event["message"]))
                self.arrived.set()

    async def to_worker(self, kind: str, **fields: Any) -> float:
        """Send like PhoneConsumer._to_worker; returns the perf_counter() just before."""
        message = {"type": kind, "user_id": self.user_id, "session": self.channel, **fields}
        while True:
            sent = time.perf_counter()
            try:
                await self.bench.layer.send(self.worker_channel, message)
                return sent
            except Exception as exc:  # channels.exceptions.ChannelFull
                if type(exc).__name__ != "ChannelFull":
                    raise
                self.bench.channel_full += 1
                await asyncio.sleep(0.05)

    async def command(self, command: str, **data: Any) -> float:
        return await self.to_worker("worker.command", command=command, data=data)

    async def wait_for(self, match: Any, timeout: float = STEP_TIMEOUT) -> tuple[float, dict]:
        """The next message (after those already returned) for which match(msg) is true;
        an `error` message or `failed` state fails the step."""
        deadline = time.monotonic() + timeout
        while True:
            while self.seen < len(self.messages):
                at, msg = self.messages[self.seen]
                self.seen += 1
                if match(msg):
                    return at, msg
                if msg["type"] == "error":
                    raise RuntimeError(f"error {msg['code']}: {msg['message']}")
                if msg["type"] == "registration" and msg["state"] == "failed":
                    raise RuntimeError(f"registration failed: {msg['reason']}")
            self.arrived.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching message")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), left)

    # the page's steps ---------------------------------------------------------------------

    async def attach(self) -> None:
        await self.open()
        await self.claim_and_attach()

    async def claim_and_attach(self, timeout: float = STEP_TIMEOUT, dead: str = "") -> None:
        """As PhoneConsumer does on connect and after its worker was lost: lease the line to a
        live worker (the current owner while it lives; after a crash, none until the dead
        owner's lease lapses, then the least loaded survivor), attach there, and wait until the
        line is registered. `dead`: a worker known dead whose key has not yet expired (the
        consumer learns it from the missing heartbeats)."""
        from phone.signalling import owners

        deadline = time.monotonic() + timeout
        while (worker := await owners.claim(self.user_id)) in (None, dead):
            if time.monotonic() > deadline:
                raise RuntimeError("no live sipworker to own the line")
            await asyncio.sleep(0.1)
        self.owner = worker
        self.worker_channel = owners.channel_of(worker)
        await self.to_worker("worker.attach", opened_at=time.time())
        await self.wait_for(
            lambda m: m["type"] == "registration" and m["state"] == "registered", timeout
        )

    async def negotiate(self) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())  # gathers (non-trickle)
        await self.command("webrtc.offer", sdp=self.pc.localDescription.sdp)
        _, answer = await self.wait_for(lambda m: m["type"] == "webrtc.answer")
        await self.media_up(answer["sdp"])

    async def media_up(self, answer_sdp: str) -> None:
        """Apply the gateway's answer, wait for ICE/DTLS, take the media path over."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        media = next(
            m for m in aiortc_sdp.SessionDescription.parse(answer_sdp).media if m.kind == "audio"
        )
        codec = media.rtp.codecs[0]
        if codec.name != "PCMU":
            raise RuntimeError(f"answered {codec.name}, not PCMU (no passthrough)")
        self.pt = codec.payloadType
        self.ssrc = self.transceiver.sender._ssrc
        deadline = time.monotonic() + STEP_TIMEOUT
        while self.pc.connectionState != "connected":
            if self.pc.connectionState == "failed" or time.monotonic() > deadline:
                raise RuntimeError(f"WebRTC {self.pc.connectionState}")
            await asyncio.sleep(0.01)
        self.dtls = self.transceiver.sender.transport
        self.install_fast_path()

    def install_fast_path(self) -> None:
        """The load generator's own media path, as cheap as the bridge's (MediaBridge's fast
        receive and synchronous send): on this 2-core machine aiortc's full receive path for
        100 browsers starves the generator's CPU and its stalls would read as the worker's."""
        dtls = self.dtls
        self.send_rtp = _browser_sender(dtls)
        try:
            unprotect = dtls._rx_srtp.unprotect
            pair = dtls.transport._connection._nominated.get(1)
        except AttributeError:
            return
        if pair is None or type(pair.protocol) is not StunProtocol:
            return
        protocol = pair.protocol
        usual = protocol.datagram_received

        def datagram_received(data: bytes, addr: tuple[str, int]) -> None:
            if len(data) > 12 and 127 < data[0] < 192 and not 191 < data[1] < 224:
                try:
                    plain = unprotect(data)
                except pylibsrtp.Error:
                    return
                try:
                    start, end = payload_bounds(plain)
                except RtpParseError:
                    return
                self.on_payload(plain[start:end])
            else:
                usual(data, addr)

        protocol.datagram_received = datagram_received  # type: ignore[method-assign]

    async def dial(self, number: str) -> None:
        sent = await self.command("dial", number=number)
        at, msg = await self.wait_for(
            lambda m: m["type"] == "call" and m["state"] in ("incall", "ended")
        )
        if msg["state"] != "incall":
            raise RuntimeError(f"call ended before it connected: {msg['reason']}")
        self.call_id = msg["id"]
        self.setup = at - sent
        self.dialled = (sent, at)  # perf_counter() is CLOCK_MONOTONIC, as the probe's times

    async def hold(self) -> None:
        """Hold the call: the sipworker re-INVITEs the far end and plays it music on hold."""
        await self.command("hold", call_id=self.call_id)
        await self.wait_for(lambda m: m["type"] == "call" and m["state"] in ("held", "ended"))

    async def hangup(self) -> None:
        await self.command("hangup", call_id=self.call_id)
        await self.wait_for(lambda m: m["type"] == "call" and m["state"] == "ended")
        self.call_id = None

    async def close(self) -> None:
        if self.channel:
            with contextlib.suppress(Exception):
                await self.to_worker("worker.detach")
        self.dtls = None
        self.send_rtp = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.pc.close(), 10)
        if self.reader is not None:
            # channels_redis's receive can sit out a cancellation (seen here: a reader stuck
            # "cancelling" for minutes), so don't wait on it; run() drops this layer anyway.
            self.reader.cancel()
            await asyncio.wait({self.reader}, timeout=2)

    # media --------------------------------------------------------------------------------

    async def on_rtp(self, packet: Any, arrival_time_ms: int = 0) -> None:
        self.on_payload(packet.payload)

    def on_payload(self, payload: bytes) -> None:
        now = time.monotonic()
        if self.last is not None:
            gap = now - self.last
            self.max_gap = max(self.max_gap, gap)
            self.gaps += gap > GAP
        self.last = now
        self.received += 1
        if len(payload) < TAG.size:
            return
        index, counter = TAG.unpack_from(payload)
        sent = self.sent_at.pop(counter, None) if index == self.index else None
        if sent is not None:
            self.echoed += 1
            self.rtts.append(now - sent)

    def send(self, payload: bytes) -> None:
        self.counter = (self.counter + 1) & 0xFFFFFFFF
        payload = TAG.pack(self.index, self.counter) + payload[TAG.size :]
        self.sent_at[self.counter] = time.monotonic()
        if len(self.sent_at) > 1000:  # forget frames that never came back (20 s)
            self.sent_at.pop(next(iter(self.sent_at)))
        data = _RTP.pack(0x80, self.pt, self.seq, self.ts, self.ssrc) + payload
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 160) & 0xFFFFFFFF
        if self.send_rtp is not None:
            self.send_rtp(data)
        else:
            _drive(self.dtls._send_rtp(data))


class JanusSession(Session):
    """--gateway janus: the same browser, talking to Janus's SIP plugin over its WebSocket API
    (janus-protocol) as janus.js would: create a session, attach janus.plugin.sip, register
    the line, then `call` with the browser's offer; setup = call sent -> `accepted` (Janus
    forwards the PBX's 200 OK with its answer), as dial -> incall is for ours."""

    def __init__(self, bench: Bench, index: int, user_id: int) -> None:
        super().__init__(bench, index, user_id)
        self.ws: Any = None
        self.session_id = 0
        self.handle_id = 0
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.transactions = 0

    async def open(self) -> None:
        from websockets.asyncio.client import connect

        port = self.bench.stack.janus_port
        self.ws = await connect(
            f"ws://127.0.0.1:{port}", subprotocols=["janus-protocol"], max_size=None
        )
        self.reader = asyncio.ensure_future(self._read())
        self.session_id = (await self.janus({"janus": "create"}))["data"]["id"]
        reply = await self.janus({"janus": "attach", "plugin": "janus.plugin.sip"})
        self.handle_id = reply["data"]["id"]

    async def janus(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send a request; its `success` reply (raises on `error`)."""
        self.transactions += 1
        transaction = f"t{self.transactions}"
        if self.session_id:
            request["session_id"] = self.session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[transaction] = future
        await self.ws.send(json.dumps({**request, "transaction": transaction}))
        reply = await asyncio.wait_for(future, STEP_TIMEOUT)
        if reply["janus"] == "error":
            raise RuntimeError(f"janus: {reply['error']}")
        return reply

    async def plugin(self, body: dict[str, Any], jsep: dict[str, Any] | None = None) -> float:
        """A request to the SIP plugin (answered by events); the perf_counter() just before."""
        self.transactions += 1
        message: dict[str, Any] = {
            "janus": "message",
            "session_id": self.session_id,
            "handle_id": self.handle_id,
            "body": body,
            "transaction": f"p{self.transactions}",
        }
        if jsep is not None:
            message["jsep"] = jsep
        sent = time.perf_counter()
        await self.ws.send(json.dumps(message))
        return sent

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            kind = msg.get("janus")
            future = self.pending.pop(msg.get("transaction", ""), None)
            if future is not None and kind in ("success", "error") and not future.done():
                future.set_result(msg)
                continue
            if kind != "event":
                continue  # ack, webrtcup, media, slowlink, ...
            data = msg.get("plugindata", {}).get("data", {})
            result = data.get("result", {})
            event: dict[str, Any] = {
                "type": "sip",
                "event": result.get("event"),
                "jsep": msg.get("jsep"),
                "result": result,
            }
            if "error" in data or result.get("event") == "registration_failed":
                event = {
                    "type": "error",
                    "code": data.get("error_code", result.get("code")),
                    "message": data.get("error", result.get("reason", "registration failed")),
                }
            self.messages.append((time.perf_counter(), event))
            self.arrived.set()

    async def attach(self) -> None:
        await self.open()
        pbx = self.bench.stack.pbx
        assert pbx is not None
        ext = extension(self.index)
        await self.plugin(
            {
                "request": "register",
                "username": f"sip:{ext}@{pbx.domain}",
                "secret": f"pw{ext}",
                "proxy": f"sip:{pbx.hostport}",
                "outbound_proxy": f"sip:{pbx.hostport}",
            }
        )
        await self.wait_for(lambda m: m["type"] == "sip" and m["event"] == "registered")

    async def negotiate(self) -> None:
        # The offer goes with the call (the SIP plugin has no WebRTC without a call): gather now.
        await self.pc.setLocalDescription(await self.pc.createOffer())

    async def dial(self, number: str) -> None:
        pbx = self.bench.stack.pbx
        assert pbx is not None
        sent = await self.plugin(
            {"request": "call", "uri": f"sip:{number}@{pbx.domain}"},
            {"type": "offer", "sdp": self.pc.localDescription.sdp},
        )
        at, msg = await self.wait_for(
            lambda m: m["type"] == "sip" and m["event"] in ("accepted", "hangup")
        )
        if msg["event"] != "accepted" or not msg["jsep"]:
            raise RuntimeError(f"call not accepted: {msg}")
        self.setup = at - sent
        await self.media_up(msg["jsep"]["sdp"])
        self.call_id = "janus"

    async def hold(self) -> None:
        raise RuntimeError("--moh is not measured with --gateway janus")

    async def hangup(self) -> None:
        await self.plugin({"request": "hangup"})
        await self.wait_for(lambda m: m["type"] == "sip" and m["event"] == "hangup")
        self.call_id = None

    async def close(self) -> None:
        self.dtls = None
        self.send_rtp = None
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.janus({"janus": "destroy"})
            with contextlib.suppress(Exception):
                await self.ws.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.pc.close(), 10)
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.wait({self.reader}, timeout=2)


class Bench:
    def __init__(self, stack: Stack, user_ids: list[int], args: argparse.Namespace) -> None:
        self.stack = stack
        self.user_ids = user_ids
        self.args = args
        self.layer: Any = None  # a channels_redis layer, new for each run()
        self.sessions: list[Session] = []
        self.tone = [g711.ulaw_encode(f) for f in SineTone(1000).frames(50)]
        self.channel_full = 0
        self.receive_errors = 0
        self.max_lag = 0.0  # how late this process's send grid ran (its loop stalls)
        self.idle = 0.0  # the sipworker's CPU share with no pages (see idle_cpu)

    async def idle_cpu(self, seconds: float = 3.0) -> float:
        """The sipworker's CPU share with no page attached (fixed costs of the process)."""
        cpu0, t0 = self.stack.workers_cpu(), time.monotonic()
        await asyncio.sleep(seconds)
        return (self.stack.workers_cpu() - cpu0) / (time.monotonic() - t0)

    async def pace(self) -> None:
        """Every fake browser sends a frame each 20 ms, each at its own phase: session i in
        the 1 ms slot i % 20 of the period. Real phones are not in step; N frames sent at one
        instant queue behind each other at every hop (and in this process's own receive) and
        read as delay that no single call sees. --in-step sends them so, as a worst case."""
        loop = asyncio.get_running_loop()
        slots = 1 if self.args.in_step else 20
        step = 0.02 / slots
        t0, k = loop.time(), 0
        while True:
            k += 1
            await asyncio.sleep(max(0.0, t0 + k * step - loop.time()))
            self.max_lag = max(self.max_lag, loop.time() - (t0 + k * step))
            frame = self.tone[(k // slots) % len(self.tone)]
            for s in self.sessions[k % slots :: slots]:
                if s.dtls is not None and s.call_id is not None:  # in a call: its audio
                    s.send(frame)

    async def step(self, name: str, sessions: list[Session], action: Any, gate: int) -> list:
        """Run action(session) for every session, at most `gate` at once; failures recorded."""
        limit = asyncio.Semaphore(gate)

        async def one(s: Session) -> None:
            if s.failure:
                return
            async with limit:
                try:
                    await action(s)
                except Exception as exc:
                    s.failure = f"{name}: {type(exc).__name__}: {exc}"
                    if self.args.why:
                        last = [m for _, m in s.messages[-3:]]
                        print(f"{'':7}{name} of page {s.index} failed: {exc!r}; last: {last}")

        await asyncio.gather(*(one(s) for s in sessions))
        return [s for s in sessions if not s.failure]

    async def run(self, n: int, moh: bool = False) -> dict[str, Any]:
        from channels.layers import channel_layers

        workers_cpu = self.stack.workers_cpu
        # A fresh layer (own connections, own receive lock) per run, so a reader of an earlier
        # run that did not finish cancelling cannot hold up this run's sessions.
        self.layer = channel_layers.make_backend("default")
        page = JanusSession if self.args.gateway == "janus" else Session
        self.sessions = sessions = [page(self, i, self.user_ids[i]) for i in range(n)]
        self.channel_full = 0
        self.receive_errors = 0
        pacer = asyncio.ensure_future(self.pace())
        cpu_setup0, t_setup0 = workers_cpu(), time.monotonic()
        try:
            t = time.monotonic()
            await self.step("attach", sessions, lambda s: s.attach(), GATE)
            attach_s = time.monotonic() - t
            # What the lines cost before any media: registered, leases, keepalives, heartbeats.
            lines_cpu = await self.idle_cpu(self.args.idle_seconds)
            t = time.monotonic()
            await self.step("webrtc", sessions, lambda s: s.negotiate(), GATE)
            offer_s = time.monotonic() - t
            await asyncio.sleep(0.5)
            pages_cpu = await self.idle_cpu(self.args.idle_seconds)  # + pages' WebRTC, no call

            async def dial(s: Session) -> None:
                if self.args.dial_rate > 0:
                    await asyncio.sleep(s.index / self.args.dial_rate)
                await s.dial(ECHO_EXT)

            await self.step("dial", sessions, dial, n)
            cpu_setup = workers_cpu() - cpu_setup0
            setup_wall = time.monotonic() - t_setup0
            live = [s for s in sessions if not s.failure]
            if moh:
                await self.step("hold", live, lambda s: s.hold(), GATE)
                live = [s for s in live if not s.failure]
            await asyncio.sleep(1.0)  # warm-up: playout buffers fill, RTCP starts
            for s in sessions:
                s.reset()
            self.max_lag = 0.0
            busy0, total0 = machine_busy()
            bench_cpu0, sipp_cpu0 = time.process_time(), self.sipp_cpu()
            cpu0, wall0 = workers_cpu(), time.monotonic()
            sys0 = sum(proc_sys_cpu(pid) for pid in self.stack.worker_pids())
            spies = self.start_profiles(n, moh)
            await asyncio.sleep(self.args.seconds)
            cpu, wall = workers_cpu() - cpu0, time.monotonic() - wall0
            kernel = sum(proc_sys_cpu(pid) for pid in self.stack.worker_pids()) - sys0
            rss = sum(proc_rss_mib(pid) for pid in self.stack.worker_pids())
            window = [
                (kind, late)
                for kind, at, late in self.stack.loop_stalls()
                if wall0 <= at - late and at <= wall0 + wall
            ]
            stalls = [late for kind, late in window if kind in ("lag", "busy")]
            busy = [late for kind, late in window if kind == "busy"]
            gcs = [late for kind, late in window if kind == "gc"]
            bench_cpu = (time.process_time() - bench_cpu0) / wall
            sipp_cpu = (self.sipp_cpu() - sipp_cpu0) / wall
            busy1, total1 = machine_busy()
            machine = (busy1 - busy0) / max(1, total1 - total0)
            max_lag = self.max_lag
            measured = [(s.received, s.echoed, s.gaps, s.max_gap, list(s.rtts)) for s in live]
            for spy, out in spies:
                await asyncio.to_thread(spy.wait)
                print(f"{'':7}py-spy profile {out}:\n{profile_summary(out)}", flush=True)
            await self.step("hangup", [s for s in live if s.call_id], lambda s: s.hangup(), GATE)
        finally:
            pacer.cancel()
            await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
            self.sessions = []
        failures = [s.failure for s in sessions if s.failure]
        ok = len(live)
        setups = [s.setup for s in live if s.setup is not None]
        rtts = [r for m in measured for r in m[4]]
        # dial -> incall at the page, split into the PBX's part and the worker's own
        times = self.stack.invite_times()
        pbx, ours, inside, before, after = [], [], [], [], []
        for s in live:
            if s.dialled is None:
                continue
            part = pbx_part(times.get(extension(s.index), []), *s.dialled)
            if part is not None:
                pbx.append(part)
                ours.append(s.dialled[1] - s.dialled[0] - part)
                marks: dict[str, float] = {}  # the worker's own view (probe): first of each
                for kind, at in times.get(s.channel, []):
                    marks.setdefault(kind, at)
                if "dial" in marks and "incall" in marks:
                    inside.append(marks["incall"] - marks["dial"] - part)
                    sip = [
                        (kind, at)
                        for kind, at in times.get(extension(s.index), [])
                        if marks["dial"] <= at <= marks["incall"]
                    ]
                    invites = [at for kind, at in sip if kind == "invite"]
                    finals = [at for kind, at in sip if kind == "final"]
                    if invites and finals:
                        before.append(invites[0] - marks["dial"])  # dial -> first INVITE out
                        after.append(marks["incall"] - finals[-1])  # 200 OK in -> incall out
        return {
            "n": n,
            "workers": len(self.stack.workers),
            "spread": sorted(Counter(s.owner for s in sessions).values()),
            "mode": ("janus " if self.args.gateway == "janus" else "")
            + ("moh" if moh else "passthrough"),
            "ok": ok,
            "failures": failures,
            "attach_s": attach_s,
            "offer_s": offer_s,
            "setup_p50": percentile(setups, 0.5) * 1000,
            "setup_p95": percentile(setups, 0.95) * 1000,
            "setup_max": max(setups, default=float("nan")) * 1000,
            "split": len(pbx),
            "pbx_p50": percentile(pbx, 0.5) * 1000,
            "pbx_p95": percentile(pbx, 0.95) * 1000,
            "ours_p50": percentile(ours, 0.5) * 1000,
            "ours_p95": percentile(ours, 0.95) * 1000,
            "inside_p50": percentile(inside, 0.5) * 1000,
            "inside_p95": percentile(inside, 0.95) * 1000,
            "before_p50": percentile(before, 0.5) * 1000,
            "before_p95": percentile(before, 0.95) * 1000,
            "after_p50": percentile(after, 0.5) * 1000,
            "after_p95": percentile(after, 0.95) * 1000,
            "cpu_per_call": cpu / wall / ok if ok else float("nan"),
            "marginal": (cpu / wall - self.idle) / ok if ok else float("nan"),
            "machine": machine,
            "max_lag_ms": max_lag * 1000,
            "worker_cpu": cpu / wall,
            "rss": rss,
            "lines_cpu": lines_cpu,
            "pages_cpu": pages_cpu,
            "kernel_share": kernel / cpu if cpu else float("nan"),
            "setup_cpu_per_call": cpu_setup / n * 1000,
            "setup_wall": setup_wall,
            "recv": statistics.mean(m[0] for m in measured) / wall if measured else 0.0,
            "echoed": statistics.mean(m[1] for m in measured) / wall if measured else 0.0,
            "min_echoed": min((m[1] for m in measured), default=0) / wall,
            "gaps": sum(m[2] for m in measured),
            "stalls": len(stalls),
            "stalls_60": sum(late > GAP for late in stalls),
            "max_stall_ms": max(stalls, default=0.0) * 1000,
            "busy_60": sum(late > GAP for late in busy),
            "max_busy_ms": max(busy, default=0.0) * 1000,
            "gcs": len(gcs),
            "max_gc_ms": max(gcs, default=0.0) * 1000,
            "max_gap_ms": max((m[3] for m in measured), default=0.0) * 1000,
            "rtt_p50": percentile(rtts, 0.5) * 1000,
            "rtt_p95": percentile(rtts, 0.95) * 1000,
            "rtt_p99": percentile(rtts, 0.99) * 1000,
            "bench_cpu": bench_cpu,
            "sipp_cpu": sipp_cpu,
            "channel_full": self.channel_full,
            "receive_errors": self.receive_errors,
        }

    def start_profiles(self, n: int, moh: bool) -> list[tuple[subprocess.Popen[bytes], Path]]:
        """--profile DIR: py-spy samples every sipworker over the steady-state window (it
        reads the process from outside, --nonblocking: the worker is not stopped to sample)."""
        if not self.args.profile:
            return []
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        directory = Path(self.args.profile)
        directory.mkdir(parents=True, exist_ok=True)
        spies = []
        for pid in self.stack.worker_pids():
            out = directory / f"{'moh' if moh else 'pass'}-{n}-{pid}.txt"
            cmd = [spy, "record", "--pid", str(pid), "--duration", str(int(self.args.seconds))]
            cmd += ["--rate", "200", "--nonblocking", "--format", "raw", "-o", str(out)]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            spies.append((proc, out))
        return spies

    def sipp_cpu(self) -> float:
        sipp = self.stack.sipp
        return proc_cpu(sipp.proc.pid) if sipp is not None and sipp.proc is not None else 0.0


def show(r: dict[str, Any]) -> None:
    per_core = 1 / r["cpu_per_call"] if r["cpu_per_call"] else float("inf")
    rtt = (
        f"added rtt p50/p95/p99 {r['rtt_p50']:.1f}/{r['rtt_p95']:.1f}/{r['rtt_p99']:.1f} ms"
        if r["echoed"]
        else "added rtt n/a (held: nothing comes back to the page)"
    )
    print(
        f"{r['mode']:>11} N={r['n']:>3} on {r['workers']} sipworker(s) (lines {r['spread']})"
        f"  connected {r['ok']}/{r['n']}  setup p50/p95"
        f" {r['setup_p50']:.0f}/{r['setup_p95']:.0f} ms (max {r['setup_max']:.0f};"
        f" PBX p50/p95 {r['pbx_p50']:.0f}/{r['pbx_p95']:.0f}, ours"
        f" {r['ours_p50']:.0f}/{r['ours_p95']:.0f} of {r['split']}, of which in the worker"
        f" {r['inside_p50']:.0f}/{r['inside_p95']:.0f}: dial -> INVITE"
        f" {r['before_p50']:.0f}/{r['before_p95']:.0f}, 200 OK -> incall"
        f" {r['after_p50']:.0f}/{r['after_p95']:.0f})"
        f"  sipworker cpu/call {r['cpu_per_call'] * 1000:.2f} ms/s -> {per_core:.0f} calls/core"
        f" (processes {r['worker_cpu'] * 100:.1f}%, {r['kernel_share'] * 100:.0f}% of it in the"
        f" kernel; above idle {r['marginal'] * 1000:.2f} ms/s; of the processes' share: lines"
        f" registered, no call {r['lines_cpu'] * 100:.1f}%, + pages' WebRTC up"
        f" {r['pages_cpu'] * 100:.1f}%, so the calls' media"
        f" {(r['worker_cpu'] - r['pages_cpu']) / max(1, r['ok']) * 1000:.2f} ms/s per call)\n"
        f"{'':7}frames/call/s recv {r['recv']:.1f} echoed {r['echoed']:.1f}"
        f" (min {r['min_echoed']:.1f})  gaps>60ms {r['gaps']} (max {r['max_gap_ms']:.0f} ms)"
        f"  {rtt}\n"
        f"{'':7}sipworker loop stalls >20 ms {r['stalls']}, >60 ms {r['stalls_60']}"
        f" (max {r['max_stall_ms']:.0f} ms), of which its own work >60 ms {r['busy_60']}"
        f" (max {r['max_busy_ms']:.0f} ms; the rest: descheduled): the gateway's own output"
        f" gaps; garbage"
        f" collections >5 ms {r['gcs']} (max {r['max_gc_ms']:.0f} ms)\n"
        f"{'':7}RSS in the calls {r['rss']:.0f} MiB;"
        f" attach+register {r['attach_s']:.1f} s, offers {r['offer_s']:.1f} s;"
        f" sipworker setup CPU {r['setup_cpu_per_call']:.0f} ms/call;"
        f" load: this process {r['bench_cpu'] * 100:.0f}% (send grid max lag"
        f" {r['max_lag_ms']:.0f} ms), SIPp {r['sipp_cpu'] * 100:.0f}%; all CPUs busy"
        f" {r['machine'] * 100:.0f}%"
        + (f"; ChannelFull retries {r['channel_full']}" if r["channel_full"] else "")
        + (f"; layer receive errors {r['receive_errors']}" if r["receive_errors"] else ""),
        flush=True,
    )
    for failure in sorted(set(r["failures"]))[:5]:
        count = r["failures"].count(failure)
        print(f"{'':7}FAILED x{count}: {failure}", flush=True)


def table(results: list[dict[str, Any]]) -> None:
    print(
        "\n             mode workers    N  conn  setup p50/p95 ms  cpu ms/call/s  calls/core"
        "  echoed/call/s  gaps>60ms  max gap ms  rtt p50/p99 ms  all CPUs busy"
    )
    for r in results:
        per_core = 1 / r["cpu_per_call"] if r["cpu_per_call"] else float("inf")
        rtt = f"{r['rtt_p50']:.1f}/{r['rtt_p99']:.1f}" if r["echoed"] else "n/a"
        print(
            f"{r['mode']:>17} {r['workers']:>7} {r['n']:>4}  {r['ok']:>4}"
            f"  {r['setup_p50']:>7.0f}/{r['setup_p95']:<8.0f}"
            f"  {r['cpu_per_call'] * 1000:>13.2f}  {per_core:>10.0f}  {r['echoed']:>13.1f}"
            f"  {r['gaps']:>9}  {r['max_gap_ms']:>10.0f}  {rtt:>14}  {r['machine'] * 100:>12.0f}%"
        )


def dump_tasks() -> None:
    """SIGUSR1: print where every task of this process waits (to diagnose a stuck run)."""
    for task in asyncio.all_tasks():
        print(f"--- {task.get_name()}: {task.get_coro()}", file=sys.stderr)
        task.print_stack(limit=8, file=sys.stderr)
    sys.stderr.flush()


async def failover(bench: Bench, n: int) -> None:
    """n idle lines spread over the workers; kill -9 the one holding most; every page of its
    lines re-claims (nothing until the dead worker's leases lapse, then the least loaded
    survivor) and re-attaches as PhoneConsumer does: how fast are they registered again?"""
    from channels.layers import channel_layers

    from phone.signalling import owners

    stack = bench.stack
    bench.layer = channel_layers.make_backend("default")
    sessions = [Session(bench, i, bench.user_ids[i]) for i in range(n)]
    try:
        live = await bench.step("attach", sessions, lambda s: s.attach(), GATE)
        doomed, held = Counter(s.owner for s in live).most_common(1)[0]
        moved = [s for s in live if s.owner == doomed]
        victim = next(p for p in stack.workers if p.pid == int(doomed.split("-")[-2]))
        os.killpg(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        back: list[float] = []

        async def reattach(s: Session) -> None:
            s.seen = len(s.messages)  # only what comes after the crash counts
            try:
                await s.claim_and_attach(timeout=30, dead=doomed)
            except Exception as exc:
                last = [m for _, m in s.messages[-3:]]
                raise RuntimeError(f"user {s.user_id} at {s.owner}: {exc}; {last}") from exc
            back.append(time.monotonic() - killed)

        await bench.step("failover", moved, reattach, len(moved))
        back.sort()
        failed = [s.failure for s in moved if s.failure]
        spread = Counter(s.owner for s in moved if not s.failure)
        first, last = (back[0], back[-1]) if back else (float("nan"), float("nan"))
        rate = (len(back) - 1) / (last - first) if len(back) > 1 and last > first else float("nan")
        print(
            f"failover: {len(live)} lines on {len(stack.workers)} sipworkers; kill -9 of the one"
            f" with {held}: {len(back)}/{len(moved)} registered again on"
            f" {len(spread)} survivor(s) {first:.2f}-{last:.2f} s after the kill"
            f" (p50 {percentile(back, 0.5):.2f} s; leases last {owners.LEASE_MS / 1000:.1f} s)"
            f" -> {rate:.0f} lines/s re-registered once the leases lapsed",
            flush=True,
        )
        for failure in sorted(set(failed))[:3]:
            print(f"{'':7}FAILED x{failed.count(failure)}: {failure}", flush=True)
    finally:
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


async def bench_main(stack: Stack, user_ids: list[int], args: argparse.Namespace) -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
    results = []
    runs = [(n, False) for n in args.n] + [(n, True) for n in args.moh]
    for count in args.workers:
        if args.gateway == "janus":
            await asyncio.to_thread(stack.start_janus)
        else:
            await asyncio.to_thread(stack.start_workers, count)
        bench = Bench(stack, user_ids, args)
        bench.idle = await bench.idle_cpu()
        print(
            f"{count} sipworker(s), pids {stack.worker_pids()}; idle (no pages):"
            f" {bench.idle * 100:.1f}% of a core,"
            f" RSS {sum(proc_rss_mib(pid) for pid in stack.worker_pids()):.0f} MiB",
            flush=True,
        )
        for n, moh in runs:
            result = await bench.run(n, moh)
            show(result)
            results.append(result)
            if len(stack.worker_pids()) < count:
                print(f"a sipworker died:\n{stack.worker_log_tail()}")
                break
        if args.failover and count >= 2:
            await failover(bench, args.failover)
        took = await asyncio.to_thread(stack.stop_workers)
        print(
            f"{count} sipworker(s) stopped (SIGTERM) in "
            + (f"{took:.1f} s" if took is not None else "> 30 s: killed"),
            flush=True,
        )
    table(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[1, 10, 25, 50, 100],
        help="comma-separated call counts (at most 100)",
    )
    parser.add_argument(
        "--moh",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[],
        help="comma-separated call counts to run again with every call held (music on hold)",
    )
    parser.add_argument(
        "--workers",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[1],
        help="comma-separated sipworker process counts to run everything with, e.g. 1,2",
    )
    parser.add_argument(
        "--failover",
        type=int,
        default=0,
        help="with 2+ sipworkers: N idle lines, kill -9 one worker, time their re-registration",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="steady-state window")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=3.0,
        help="windows for the lines' and the pages' own CPU, before any call",
    )
    parser.add_argument(
        "--dial-rate", type=float, default=25.0, help="calls dialled per second (0: all at once)"
    )
    parser.add_argument("--rtp-ports", default="62000-62999", help="the sipworker's RTP range")
    parser.add_argument("--worker-log-level", default="WARNING", help="the sipworker's LOG_LEVEL")
    parser.add_argument(
        "--plain-redis-url",
        action="store_true",
        help="no ?socket_timeout=30 in REDIS_URL (shows the redis-py 8 receive timeout)",
    )
    parser.add_argument(
        "--why", action="store_true", help="print each failed page and its last messages"
    )
    parser.add_argument("--log-dir", default="", help="keep every log of the run there")
    parser.add_argument("--keep-log", action="store_true", help="print the sipworker log at end")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="sipworkers on the last CPU, this process, SIPp, Kamailio and redis on the others",
    )
    parser.add_argument(
        "--in-step",
        action="store_true",
        help="every browser sends at the same instant of the 20 ms period (a worst case: "
        "by default each has its own phase, as independent phones do)",
    )
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="the sipworkers' event loop (SIPWORKER_EVENT_LOOP; production's default: uvloop)",
    )
    parser.add_argument(
        "--gateway",
        choices=("ours", "janus"),
        default="ours",
        help="what bridges the browsers to the PBX: our sipworker, or Janus 1.1's SIP plugin"
        " (Debian's janus) for a side-by-side on the same machine",
    )
    parser.add_argument(
        "--profile", default="", help="directory: py-spy profiles of the steady-state windows"
    )
    args = parser.parse_args()
    if max(args.n + args.moh) > MAX_USERS:
        parser.error(f"at most {MAX_USERS} calls")
    for program, found in (
        ("kamailio", kamailio_binary()),
        ("sipp", sipp_binary()),
        ("redis-server", shutil.which("redis-server")),
        ("psql", shutil.which("psql")),
    ):
        if not found:
            sys.exit(f"{program} is not installed")
    import aioice.ice

    if not aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False):
        sys.exit("no non-loopback IPv4 address: aioice (unpatched in the sipworker) can't pair")

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    stack = Stack(args)
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            sys.exit("--pin needs two CPUs")
        stack.worker_cpu = cpus[-1]
        # Before any child or thread exists: all of them inherit it (redis, Kamailio, SIPp).
        os.sched_setaffinity(0, cpus[:-1])
    rtp_min, _, rtp_max = args.rtp_ports.partition("-")
    # redis-py >= 8 reads with a 5 s socket timeout by default, and channels_redis blocks in
    # BZPOPMIN for 5 s: every receive on an idle channel then fails with redis TimeoutError
    # (the sipworker's and every consumer's). A longer socket timeout in the URL avoids it.
    redis_query = "" if args.plain_redis_url else "?socket_timeout=30"
    try:
        stack.start_redis()
        stack.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DATABASE_URL": f"{PG_SERVER}/{DB_NAME}",
            "REDIS_URL": f"redis://127.0.0.1:{stack.redis_port}/0" + redis_query,
            "DEBUG": "true",
            "SECRET_KEY": "bridge-fullstack-benchmark-only-not-a-secret-0123456789",
            "SIP_BIND_ADDRESS": "127.0.0.1",
            "MEDIA_ADDRESS": "",
            "RTP_PORT_MIN": rtp_min,
            "RTP_PORT_MAX": rtp_max,
            "ICE_SERVERS": "",
            "LOG_LEVEL": args.worker_log_level,
            "PYTHONUNBUFFERED": "1",
        }
        os.environ.update({**stack.env, "LOG_LEVEL": "WARNING"})
        stack.create_database()
        stack.start_pbx()
        stack.start_far_end()
        import django

        django.setup()
        assert stack.pbx is not None
        user_ids = populate(stack.pbx)
        print(
            f"bridge full-stack benchmark: {os.cpu_count()} CPUs, {args.seconds:.0f} s steady"
            f" state, dial rate {args.dial_rate or 'all at once'}/s; "
            + (
                "gateway Janus 1.1 SIP plugin"
                if args.gateway == "janus"
                else f"sipworkers {args.workers} on {args.loop}'s loop"
            )
            + (f" pinned to CPU {stack.worker_cpu}, the rest on the others" if args.pin else "")
            + ("; browsers send in step" if args.in_step else "")
            + f", redis :{stack.redis_port},"
            f" kamailio {stack.pbx.hostport}, SIPp echo {stack.sipp.port}",  # type: ignore[union-attr]
            flush=True,
        )
        asyncio.run(bench_main(stack, user_ids, args))
        problems = stack.worker_errors()
        print(f"sipworker logs: {len(problems)} error line(s)")
        if problems or args.keep_log:
            print(stack.worker_log_tail(200 if args.keep_log else 40))
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
