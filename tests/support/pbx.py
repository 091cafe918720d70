"""A throwaway Kamailio 5.6 registrar/proxy for integration tests.

    with Kamailio(users={"1001": "pw1001"}) as pbx:
        pbx.host, pbx.port, pbx.domain      # 127.0.0.1, <free port>, "127.0.0.1"
        pbx.proxy_uri                       # "sip:127.0.0.1:<port>" (outbound proxy)
        pbx.add_user("1011", "pw1011")      # at runtime, via kamcmd
        pbx.registrations()                 # [Registration(aor="1001", contacts=[...])]

    Kamailio(users=..., lines={"0311112222": ["1001", "1002"]})
        # line buttons' numbers (外線番号): who may present each as caller ID, whom a call to it
        # rings (deploy/kamailio/kamailio.cfg, route[IDENTITY] and route[LINE_IN])
        pbx.add_line("0311113333", ["1001"]) # at runtime, via kamcmd

It runs ``deploy/kamailio/kamailio.cfg`` in the foreground (``-DD -E``) as our child process,
on a free UDP+TCP port of 127.0.0.1, with its own run directory, control socket, users and
lines files, and is ready once it answers an OPTIONS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import children
from tests.support.ports import free_port, release_ports

REPO_ROOT = Path(__file__).resolve().parents[2]
KAMAILIO_CFG = REPO_ROOT / "deploy" / "kamailio" / "kamailio.cfg"


def kamailio_binary() -> str | None:
    """Path of the kamailio binary (Debian installs it in /usr/sbin), or None."""
    return shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/usr/local/sbin")


def kamcmd_binary() -> str | None:
    return shutil.which("kamcmd") or shutil.which("kamcmd", path="/usr/sbin:/usr/local/sbin")


class KamailioError(RuntimeError):
    pass


@dataclass
class Contact:
    uri: str
    expires: int | None = None
    user_agent: str = ""
    received: str | None = None
    socket: str = ""
    call_id: str = ""
    raw: dict[str, str] = field(default_factory=dict)


@dataclass
class Registration:
    aor: str
    contacts: list[Contact]


def sip_options(
    host: str,
    port: int,
    *,
    uri: str | None = None,
    timeout: float = 0.5,
) -> int | None:
    """Send one raw UDP OPTIONS; return the response status code (None on timeout)."""
    target = uri or f"sip:{host}:{port}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        lport = s.getsockname()[1]
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        msg = (
            f"OPTIONS {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1:{lport}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <{target}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Accept: application/sdp\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        s.settimeout(timeout)
        s.sendto(msg.encode(), (host, port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, _ = s.recvfrom(65535)
            except (TimeoutError, ConnectionRefusedError):
                return None
            m = re.match(rb"SIP/2\.0 (\d{3}) ", data)
            if m and branch.encode() in data:
                return int(m.group(1))
    return None


def parse_kamcmd_tree(text: str) -> list[tuple[str, Any]]:
    """Parse kamcmd's structured output into nested ``[(key, value), ...]`` lists.

    kamcmd prints RPC structs as ``key: value`` lines and ``key: {`` ... ``}`` blocks;
    anonymous top-level structs are ``{`` ... ``}``. Keys repeat (e.g. ``Contact``), hence
    lists of pairs rather than dicts.
    """
    root: list[tuple[str, Any]] = []
    stack = [root]
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line == "}":
            if len(stack) > 1:
                stack.pop()
            continue
        if line == "{":
            node: list[tuple[str, Any]] = []
            stack[-1].append(("", node))
            stack.append(node)
            continue
        key, sep, value = line.partition(":")
        if not sep:
            stack[-1].append(("", line))
            continue
        value = value.strip()
        if value == "{":
            node = []
            stack[-1].append((key.strip(), node))
            stack.append(node)
        else:
            stack[-1].append((key.strip(), value))
    return root


def _find_all(tree: list[tuple[str, Any]], key: str) -> list[Any]:
    found = []
    for k, v in tree:
        if k == key:
            found.append(v)
        if isinstance(v, list):
            found.extend(_find_all(v, key))
    return found


class Kamailio(children.ProgramHelper):
    """One Kamailio instance on 127.0.0.1 with its own port, run dir and users."""

    def __init__(
        self,
        users: dict[str, str] | None = None,
        *,
        domain: str = "127.0.0.1",
        host: str = "127.0.0.1",
        port: int | None = None,
        cfg: Path | str = KAMAILIO_CFG,
        log_level: int = 2,
        start_timeout: float = 10.0,
        lines: dict[str, list[str] | str] | None = None,
        shm_mb: int = 64,
        pkg_mb: int = 8,
        users_htable_size: int | None = None,
    ) -> None:
        self.users: dict[str, str] = dict(users or {})
        # Thousands of users (benchmarks/sip_register.py): more shared memory for their
        # registrations and transactions, more private memory for the users file (each line is
        # a script statement, ~4 KiB parsed: 8 MiB holds about 2000), and a users table of
        # 2^users_htable_size buckets. The defaults keep a test instance small and quick.
        self.shm_mb = shm_mb
        self.pkg_mb = pkg_mb
        self.users_htable_size = users_htable_size
        # line number -> extensions allowed to present it and rung when it is called
        self.lines: dict[str, list[str]] = {
            number: [exts] if isinstance(exts, str) else list(exts)
            for number, exts in (lines or {}).items()
        }
        self.domain = domain
        self.host = host
        self.cfg = Path(cfg)
        self.log_level = log_level
        self.start_timeout = start_timeout
        self._requested_port = port
        self.port: int = port or 0
        self._reserved_port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        # Kamailio's include_file takes at most 127 bytes, unix sockets ~107: keep it short.
        self.rundir = Path(tempfile.mkdtemp(prefix="kam-", dir="/tmp"))
        self.users_file = self.rundir / "users.cfg"
        self.lines_file = self.rundir / "lines.cfg"
        self.ctl_socket = self.rundir / "ctl"
        self.pidfile = self.rundir / "kamailio.pid"
        self.log_path = self.rundir / "kamailio.log"
        self._log_fh: Any = None

    # -- addresses -------------------------------------------------------------------------

    @property
    def proxy_uri(self) -> str:
        """Outbound proxy / registrar address as a SIP URI (UDP)."""
        return f"sip:{self.host}:{self.port}"

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    def aor(self, ext: str) -> str:
        return f"sip:{ext}@{self.domain}"

    # -- lifecycle -------------------------------------------------------------------------

    def _write_users(self) -> None:
        lines = ["# generated by tests/support/pbx.py"]
        for ext, pw in self.users.items():
            _check_token(ext)
            _check_token(pw)
            lines.append(f'$sht(users=>{ext}) = "{pw}";')
        self.users_file.write_text("\n".join(lines) + "\n")

    def _write_lines(self) -> None:
        lines = ["# generated by tests/support/pbx.py"]
        for number, exts in self.lines.items():
            lines.append(f'$sht(lines=>{number}) = "{_line_value(number, exts)}";')
        self.lines_file.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        binary = kamailio_binary()
        if binary is None:
            raise KamailioError("kamailio binary not found (apt-get install kamailio)")
        cmd = [
            binary,
            "-f",
            str(self.cfg),
            "-DD",
            "-E",
            "-Y",
            str(self.rundir),
            "-P",
            str(self.pidfile),
            "-m",
            str(self.shm_mb),
            "-M",
            str(self.pkg_mb),
            "-A",
            f"SIP_IP={self.host}",
            "-A",
            f"SIP_PORT={self.port}",
            "-A",
            f'CTL_SOCK="unix:{self.ctl_socket}"',
            "-A",
            f"LOG_LEVEL={self.log_level}",
            "--substdef",
            f"!USERS_FILE!{self.users_file}!g",
            "--substdef",
            f"!LINES_FILE!{self.lines_file}!g",
        ]
        if self.users_htable_size is not None:
            cmd += ["--substdef", f"!USERS_HTABLE_SIZE!{int(self.users_htable_size)}!g"]
        if self.domain != self.host:
            cmd += ["-A", f"SIP_DOMAIN={self.domain}"]
        else:
            # A UA whose domain is the bare IP sends sip:127.0.0.1 (port 5060 implied).
            cmd += ["-A", f"SIP_ALIAS={self.host}:5060"]
        return cmd

    def start(self) -> Kamailio:
        if self.proc is not None:
            return self
        self._write_users()
        self._write_lines()
        if len(str(self.users_file)) >= 127:
            raise KamailioError(f"users file path too long for include_file: {self.users_file}")
        if self._requested_port is None:
            self.port = free_port(host=self.host)
            self._reserved_port = self.port
        self._log_fh = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            children.command(self.command(), "TERM"),
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            cwd=self.rundir,
            start_new_session=True,  # our own process group: stop() can kill all children
        )
        children.track(self.proc)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log_text()
                self._cleanup()
                raise KamailioError(f"kamailio exited with {self.proc.returncode}:\n{log[-4000:]}")
            if sip_options(self.host, self.port, timeout=0.2) == 200:
                return self
        self.stop()
        raise KamailioError(f"kamailio did not answer OPTIONS within {self.start_timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            # SIGTERM to the main process stops all its workers.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        if proc is not None:
            # Workers left behind (e.g. the main process was SIGKILLed) share its group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            children.untrack(proc)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        if self._reserved_port is not None:
            release_ports(self._reserved_port)
            self._reserved_port = None

    def remove_files(self) -> None:
        shutil.rmtree(self.rundir, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.remove_files()

    # -- runtime control -------------------------------------------------------------------

    def kamcmd(self, *args: str, timeout: float = 5.0) -> str:
        binary = kamcmd_binary()
        if binary is None:
            raise KamailioError("kamcmd binary not found")
        res = subprocess.run(
            [binary, "-s", f"unix:{self.ctl_socket}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if res.returncode != 0 or res.stderr.strip().startswith("error"):
            raise KamailioError(f"kamcmd {' '.join(args)} failed: {res.stdout}{res.stderr}")
        return res.stdout

    def add_user(self, ext: str, password: str) -> None:
        """Add or change a user at runtime (and in the users file, for a restart)."""
        _check_token(ext)
        _check_token(password)
        # "s:" forces strings: bare digits would be sent as integers and rejected.
        self.kamcmd("htable.sets", "users", f"s:{ext}", f"s:{password}")
        self.users[ext] = password
        self._write_users()

    def remove_user(self, ext: str) -> None:
        self.kamcmd("htable.delete", "users", f"s:{ext}")
        self.users.pop(ext, None)
        self._write_users()

    def add_line(self, number: str, extensions: list[str] | str) -> None:
        """Add or change a line at runtime (and in the lines file, for a restart)."""
        exts = [extensions] if isinstance(extensions, str) else list(extensions)
        self.kamcmd("htable.sets", "lines", f"s:{number}", f"s:{_line_value(number, exts)}")
        self.lines[number] = exts
        self._write_lines()

    def remove_line(self, number: str) -> None:
        self.kamcmd("htable.delete", "lines", f"s:{number}")
        self.lines.pop(number, None)
        self._write_lines()

    def registrations(self) -> list[Registration]:
        """Current registrations from ``ul.dump``."""
        tree = parse_kamcmd_tree(self.kamcmd("ul.dump"))
        regs = []
        for info in _find_all(tree, "Info"):
            aor = next((v for k, v in info if k == "AoR"), "")
            contacts = []
            for c in _find_all(info, "Contact"):
                raw = {k: v for k, v in c if isinstance(v, str)}
                expires = raw.get("Expires", "")
                received = raw.get("Received")
                contacts.append(
                    Contact(
                        uri=raw.get("Address", ""),
                        expires=int(expires) if expires.lstrip("-").isdigit() else None,
                        user_agent=raw.get("User-Agent", ""),
                        received=None if received == "[not set]" else received,
                        socket=raw.get("Socket", ""),
                        call_id=raw.get("Call-ID", ""),
                        raw=raw,
                    )
                )
            regs.append(Registration(aor=aor, contacts=contacts))
        return regs

    def registered(self, ext: str) -> list[Contact]:
        """Contacts registered for extension ``ext`` (empty list if none)."""
        for reg in self.registrations():
            if reg.aor in (ext, f"{ext}@{self.domain}"):
                return reg.contacts
        return []

    def wait_registered(self, ext: str, timeout: float = 10.0, count: int = 1) -> list[Contact]:
        deadline = time.monotonic() + timeout
        while True:
            contacts = self.registered(ext)
            if len(contacts) >= count:
                return contacts
            if time.monotonic() > deadline:
                raise TimeoutError(f"{ext} not registered at {self.hostport} after {timeout}s")
            time.sleep(0.1)

    async def wait_registered_async(
        self, ext: str, timeout: float = 10.0, count: int = 1
    ) -> list[Contact]:
        """:meth:`wait_registered` without blocking the running event loop."""
        return await asyncio.to_thread(self.wait_registered, ext, timeout, count)

    def options(self, uri: str | None = None, timeout: float = 0.5) -> int | None:
        return sip_options(self.host, self.port, uri=uri, timeout=timeout)


def _check_token(value: str) -> None:
    # Values end up inside a Kamailio script string and a kamcmd argument.
    if not re.fullmatch(r"[A-Za-z0-9._~!*+=@-]+", value):
        raise ValueError(f"unsupported characters in {value!r} (keep users simple)")


def _line_value(number: str, extensions: list[str]) -> str:
    """The lines table's value: the extensions, comma-separated (the cfg splits on ",")."""
    _check_token(number)
    if not extensions:
        raise ValueError(f"line {number} needs at least one extension")
    for ext in extensions:
        _check_token(ext)
    return ",".join(extensions)


KAMAILIO_TLS_CFG = REPO_ROOT / "deploy" / "kamailio" / "kamailio-tls.cfg"


def kamailio_tls_module() -> Path | None:
    """The tls module of Debian's `kamailio-tls-modules`, or None when it is not installed."""
    for lib in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"):
        path = Path(lib) / "kamailio" / "modules" / "tls.so"
        if path.exists():
            return path
    return None


class TlsKamailio(Kamailio):
    """The same PBX with a TLS listener too (deploy/kamailio/kamailio-tls.cfg): UDP+TCP on
    ``port`` as usual, TLS on ``tls_port`` with the given server certificate and key.

        with TlsKamailio(users, cert=cert_pem, key=key_pem, domain="pbx.test") as pbx:
            pbx.tls_addr        # ("127.0.0.1", <tls port>)
    """

    def __init__(
        self,
        users: dict[str, str] | None = None,
        *,
        cert: Path | str,
        key: Path | str,
        tls_port: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("cfg", KAMAILIO_TLS_CFG)
        super().__init__(users, **kwargs)
        self.cert = Path(cert)
        self.key = Path(key)
        self._requested_tls_port = tls_port
        self.tls_port: int = tls_port or 0
        self._reserved_tls_port: int | None = None

    @property
    def tls_addr(self) -> tuple[str, int]:
        return (self.host, self.tls_port)

    def command(self) -> list[str]:
        return [
            *super().command(),
            "-A",
            f"TLS_PORT={self.tls_port}",
            "-A",
            f'TLS_CERT="{self.cert}"',
            "-A",
            f'TLS_KEY="{self.key}"',
        ]

    def start(self) -> TlsKamailio:
        if self.proc is not None:
            return self
        if self._requested_tls_port is None:
            self.tls_port = free_port(host=self.host, udp=False)
            self._reserved_tls_port = self.tls_port
        try:
            super().start()
        except BaseException:
            self._release_tls_port()
            raise
        return self

    def _cleanup(self) -> None:
        super()._cleanup()
        self._release_tls_port()

    def _release_tls_port(self) -> None:
        if self._reserved_tls_port is not None:
            release_ports(self._reserved_tls_port)
            self._reserved_tls_port = None
