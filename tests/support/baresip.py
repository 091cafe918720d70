"""baresip 1.0 as a scriptable SIP far end for integration tests.

    with Baresip(pbx, "1002", "pw1002", tone=wav_700, auto_answer=True) as bob:
        bob.dial(pbx.aor("1001"))            # or alice.dial(...)
        bob.wait_event("CALL_ESTABLISHED")
        bob.hangup()
        bob.wait_event("CALL_CLOSED")
        bob.received_wavs()                   # what bob heard, one WAV per call

Each instance gets a temporary config directory (config, accounts), a free SIP port (and
port + 1, where baresip also binds TLS), a free ``ctrl_tcp`` port, and runs as our child
process. Audio: the ``aufile`` source plays ``tone`` (mono S16LE at 8000 Hz for G.711; a
source file that ends ends the call, so make it longer than the call), the ``sndfile``
filter writes what is sent and received per call into the config directory, the player
is ``aubridge`` (no sound card; ALSA's null device busy-loops).

Control is ``ctrl_tcp``: netstring-framed JSON ``{"command", "params", "token"}``;
responses come back as ``{"response": true, "ok", "data", "token"}`` and events as
``{"event": true, "type": "CALL_INCOMING", "class": "call", ...}``. A reader thread
collects events; :meth:`wait_event` (blocking) and :meth:`wait_event_async` (for asyncio
tests whose event loop must keep running) wait for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.support import children
from tests.support.pbx import Kamailio
from tests.support.ports import RTP_RANGE, release_ports, reserve_ports

MODULE_PATH = "/usr/lib/baresip/modules"


def baresip_binary() -> str | None:
    return shutil.which("baresip")


class BaresipError(RuntimeError):
    pass


def _netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


class Baresip(children.ProgramHelper):
    """One baresip user agent registered (optionally) at a :class:`Kamailio`."""

    def __init__(
        self,
        pbx: Kamailio | None,
        ext: str,
        password: str | None = None,
        *,
        domain: str | None = None,
        proxy: str | None = None,
        tone: Path | str | None = None,
        auto_answer: bool = False,
        register: bool = True,
        transport: str = "udp",
        name: str | None = None,
        extra_config: str = "",
        account_params: str = "",
        start_timeout: float = 10.0,
        workdir: Path | str | None = None,
    ) -> None:
        if baresip_binary() is None:
            raise BaresipError("baresip binary not found (apt-get install baresip)")
        self.pbx = pbx
        self.ext = ext
        self.password = password if password is not None else (pbx.users.get(ext) if pbx else None)
        self.domain = domain or (pbx.domain if pbx else "127.0.0.1")
        self.proxy = proxy or (pbx.proxy_uri if pbx else None)
        self.tone = Path(tone) if tone else None
        self.auto_answer = auto_answer
        self.register = register
        self.transport = transport
        self.name = name or ext
        self.extra_config = extra_config
        self.account_params = account_params
        self.start_timeout = start_timeout
        # Config, log and recordings; under ``workdir`` (e.g. pytest's tmp_path) if given.
        self.dir = Path(tempfile.mkdtemp(prefix=f"baresip-{self.name}-", dir=workdir))
        self.log_path = self.dir / "baresip.log"
        self.sip_port = 0
        self.ctrl_port = 0
        self._sip_block: int | None = None
        self._ctrl_block: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._quit_at: float | None = None
        self._log_fh: Any = None
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self._tokens = itertools.count(1)
        self._responses: dict[str, queue.Queue[dict[str, Any]]] = {}
        self._cond = threading.Condition()
        self.events: list[dict[str, Any]] = []
        self._consumed: set[int] = set()  # indexes into events returned by wait_event()

    # -- addresses -------------------------------------------------------------------------

    @property
    def aor(self) -> str:
        return f"sip:{self.ext}@{self.domain}"

    @property
    def contact_hostport(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    # -- config ----------------------------------------------------------------------------

    def _write_config(self) -> None:
        source = f"aufile,{self.tone}" if self.tone else "aubridge,silence"
        lines = [
            "poll_method epoll",
            f"sip_listen 127.0.0.1:{self.sip_port}",
            # An address, not an interface name ("lo" is not accepted).
            "net_interface 127.0.0.1",
            "call_local_timeout 120",
            "call_max_calls 4",
            f"audio_source {source}",
            f"audio_player aubridge,{self.name}-out",
            f"audio_alert aubridge,{self.name}-alert",
            "audio_level no",
            "ausrc_format s16",
            "auplay_format s16",
            "auenc_format s16",
            "audec_format s16",
            "audio_buffer 20-160",
            f"rtp_ports {RTP_RANGE[0]}-{RTP_RANGE[1]}",
            "rtcp_mux no",
            "jitter_buffer_delay 1-10",
            "rtp_timeout 0",
            f"module_path {MODULE_PATH}",
            "module g711.so",
            "module aufile.so",
            "module aubridge.so",
            # Audio filter: writes dump-<peer>-enc.wav (sent) / -dec.wav (received) per call.
            "module sndfile.so",
            f"snd_path {self.dir}",
            "module_tmp uuid.so",
            "module_tmp account.so",
            "module_app menu.so",
            "module_app ctrl_tcp.so",
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
            # menu: no ringback tone playing into aubridge, no redial
            "ringback_disabled yes",
            "menu_bell no",
            "statmode_default off",
            self.extra_config,
        ]
        (self.dir / "config").write_text("\n".join(lines) + "\n")

        params = []
        if self.password is not None:
            params += [f"auth_user={self.ext}", f"auth_pass={self.password}"]
        if self.proxy:
            proxy = self.proxy
            if self.transport != "udp" and "transport=" not in proxy:
                proxy += f";transport={self.transport}"
            params.append(f'outbound="{proxy}"')
        params.append("regint=" + ("600" if self.register else "0"))
        params.append("answermode=" + ("auto" if self.auto_answer else "manual"))
        params += ["audio_codecs=PCMU,PCMA", "ptime=20", "mwi=no"]
        if self.account_params:
            params.append(self.account_params.lstrip(";"))
        self.account_line = f"<sip:{self.ext}@{self.domain}>;" + ";".join(params)
        # The account is created with "uanew" once ctrl_tcp is connected: REGISTER_OK of an
        # account from this file would be emitted before anyone listens.
        (self.dir / "accounts").write_text("")
        (self.dir / "contacts").write_text("")

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Baresip:
        if self.proc is not None:
            return self
        # SIP on p (UDP+TCP) and TLS on p+1: reserve both; the ctrl port separately.
        self._sip_block = self.sip_port = reserve_ports(2)
        self._ctrl_block = self.ctrl_port = reserve_ports(1, udp=False)
        self._write_config()
        self._log_fh = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        binary = baresip_binary()
        assert binary is not None
        self.proc = subprocess.Popen(
            children.command([binary, "-f", str(self.dir)]),
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            start_new_session=True,
        )
        children.track(self.proc)
        try:
            self._connect()
            self.command("uanew", self.account_line)
            if self.register and self.proxy:
                self.wait_registered()
        except BaseException:
            self.stop()
            raise
        return self

    def _connect(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise BaresipError(
                    f"baresip exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}"
                )
            try:
                sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=0.5)
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    log = self.log_text()[-3000:]
                    raise BaresipError(f"ctrl_tcp not reachable:\n{log}") from exc
                time.sleep(0.05)
        sock.settimeout(None)
        self._sock = sock
        self._reader = threading.Thread(target=self._read_loop, name=f"baresip-{self.name}")
        self._reader.daemon = True
        self._reader.start()

    def _read_loop(self) -> None:
        buf = b""
        sock = self._sock
        assert sock is not None
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while True:
                colon = buf.find(b":")
                if colon < 0:
                    break
                length = int(buf[:colon])
                end = colon + 1 + length
                if len(buf) < end + 1:
                    break
                payload, buf = buf[colon + 1 : end], buf[end + 1 :]
                try:
                    msg = json.loads(payload)
                except ValueError:
                    continue
                self._dispatch(msg)
        with self._cond:
            self._cond.notify_all()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("response"):
            token = str(msg.get("token", ""))
            q = self._responses.get(token)
            if q is not None:
                q.put(msg)
            return
        if msg.get("event"):
            msg["_time"] = time.monotonic()
            with self._cond:
                self.events.append(msg)
                self._cond.notify_all()

    def quit(self) -> None:
        """Ask baresip to quit (un-REGISTER, hang up) without waiting for it: stop() waits.
        Quitting several first lets their graceful waits overlap."""
        proc = self.proc
        if proc is not None and proc.poll() is None and self._quit_at is None:
            self._quit_at = time.monotonic()
            with contextlib.suppress(BaresipError, OSError):
                self.command("quit", timeout=1.0)

    def stop(self, timeout: float = 5.0) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self.quit()
            assert self._quit_at is not None
            try:
                proc.wait(max(0.0, self._quit_at + 2.0 - time.monotonic()))
            except subprocess.TimeoutExpired:
                # Still waiting out a transaction (a BYE to a test's page or worker that is
                # gone retransmits for 32 s); its un-REGISTER was answered long ago. The first
                # SIGTERM is another graceful quit; a second one exits at once (baresip's
                # signal handler), where the graceful wait cost 3-7 s of this teardown.
                proc.send_signal(signal.SIGTERM)
                time.sleep(0.1)
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # anything it forked
            children.untrack(proc)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        for first, count in ((self._sip_block, 2), (self._ctrl_block, 1)):
            if first is not None:
                release_ports(first, count)
        self._sip_block = self._ctrl_block = None

    def remove_files(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- commands --------------------------------------------------------------------------

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        """Run a baresip command (the long names of ``/help``); return the response.

        Raises :class:`BaresipError` if baresip answers ``ok: false``.
        """
        if self._sock is None:
            raise BaresipError("not connected")
        token = str(next(self._tokens))
        q: queue.Queue[dict[str, Any]] = queue.Queue()
        self._responses[token] = q
        payload = json.dumps({"command": command, "params": params, "token": token}).encode()
        try:
            with self._send_lock:
                self._sock.sendall(_netstring(payload))
            try:
                resp = q.get(timeout=timeout)
            except queue.Empty:
                raise BaresipError(f"no response to {command!r} within {timeout}s") from None
        finally:
            self._responses.pop(token, None)
        if not resp.get("ok", False):
            raise BaresipError(f"{command} {params}: {resp.get('data', '')!r}")
        return resp

    def dial(self, uri: str) -> dict[str, Any]:
        """Call ``uri`` (a full SIP URI, or an extension: completed with our domain)."""
        if not uri.startswith(("sip:", "sips:", "tel:")):
            uri = f"sip:{uri}@{self.domain}"
        return self.command("dial", uri)

    def accept(self) -> dict[str, Any]:
        return self.command("accept")

    def hangup(self) -> dict[str, Any]:
        return self.command("hangup")

    def hold(self) -> dict[str, Any]:
        return self.command("hold")

    def resume(self) -> dict[str, Any]:
        return self.command("resume")

    def transfer(self, uri: str) -> dict[str, Any]:
        """Blind transfer of the current call (REFER) to ``uri``."""
        if not uri.startswith(("sip:", "sips:")):
            uri = f"sip:{uri}@{self.domain}"
        return self.command("transfer", uri)

    def send_dtmf(self, digits: str) -> None:
        """Send DTMF digits on the current call (RFC 4733 telephone-event)."""
        for digit in digits:
            self.command("sndcode", digit)

    def list_calls(self) -> str:
        return str(self.command("listcalls").get("data", ""))

    # -- events ----------------------------------------------------------------------------

    def wait_registered(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait for REGISTER_OK; raise at once on REGISTER_FAIL."""
        deadline = time.monotonic() + (timeout or self.start_timeout)
        with self._cond:
            while True:
                for ev in self.events:
                    if ev.get("type") == "REGISTER_OK":
                        return ev
                    if ev.get("type") == "REGISTER_FAIL":
                        raise BaresipError(f"{self.name}: registration failed: {ev}")
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.running:
                    raise TimeoutError(f"{self.name}: not registered; events {self.event_types()}")
                self._cond.wait(min(remaining, 0.2))

    def wait_event(
        self,
        type_: str,
        timeout: float = 10.0,
        *,
        consume: bool = True,
        **match: Any,
    ) -> dict[str, Any]:
        """Return the oldest event of ``type_`` (with fields equal to ``match``) that no
        earlier ``wait_event`` returned, waiting up to ``timeout`` seconds for it.

        Each event is returned once (unless ``consume=False``), so waiting three times for
        ``CALL_DTMF_START`` yields three digits in order. Events that already happened count:
        no race between a command and waiting for its outcome.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, ev in enumerate(self.events):
                    if i in self._consumed or ev.get("type") != type_:
                        continue
                    if all(ev.get(k) == v for k, v in match.items()):
                        if consume:
                            self._consumed.add(i)
                        return ev
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._sock is None or not self.running):
                    seen = [e.get("type") for e in self.events]
                    raise TimeoutError(
                        f"{self.name}: no {type_} {match or ''} within {timeout}s; events: {seen}"
                    )
                self._cond.wait(min(remaining, 0.2))

    async def wait_event_async(
        self, type_: str, timeout: float = 10.0, **match: Any
    ) -> dict[str, Any]:
        """:meth:`wait_event` without blocking the running event loop."""
        return await asyncio.to_thread(self.wait_event, type_, timeout, **match)

    def event_types(self) -> list[str]:
        return [str(e.get("type")) for e in self.events]

    # -- audio -----------------------------------------------------------------------------

    def _wavs(self, suffix: str) -> list[Path]:
        return sorted(self.dir.glob(f"dump-*-{suffix}.wav"), key=lambda p: p.stat().st_mtime)

    def received_wavs(self) -> list[Path]:
        """What this UA received (decoded), one WAV per call, oldest first."""
        return self._wavs("dec")

    recorded_wavs = received_wavs

    def sent_wavs(self) -> list[Path]:
        """What this UA sent (before encoding), one WAV per call."""
        return self._wavs("enc")
