"""SRTP and SRTCP (RFC 3711) for the RTP leg towards the PBX, keyed by SDES (RFC 4568).

The cryptography is libsrtp's, through pylibsrtp (the binding aiortc uses for DTLS-SRTP):
this module only chooses the policies and keeps the counters. One ``SrtpContext`` per leg
holds two libsrtp sessions - one keyed with our master key for what we send, one with the far
end's for what we receive - because SDES gives each direction its own key (RFC 4568 §6.1).
Sans-I/O: bytes in, bytes (or None) out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pylibsrtp

__all__ = ["SUITE_PROFILES", "SrtpContext", "SrtpCounters", "rtp_protector", "rtp_unprotector"]

# RFC 4568 §6.2 crypto-suite names → libsrtp profiles. For _32, libsrtp keeps the 80-bit tag
# on SRTCP, as §6.2.2 requires.
SUITE_PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
KEY_LENGTH = 30  # 128-bit master key || 112-bit master salt (RFC 3711 §8.2, RFC 4568 §6.2.1)


# -- one RTP packet through libsrtp, for the per-packet paths ---------------------------------
#
# pylibsrtp's Session.protect/unprotect go through a generic __process that allocates a cffi
# `int *` and checks types on every call; per forwarded packet that wrapper costs about as
# much as the AES and HMAC themselves. These do the same calls - the session's own buffer and
# libsrtp context, one `int *` kept per callable - and raise the same pylibsrtp.Error. They
# rely on pylibsrtp's attributes (_srtp, _cdata, _buffer); without them, the public methods.
# Each callable keeps the session's libsrtp context alive for as long as it may be called.


def _fast(session: Any, func_name: str, trailer: int) -> Callable[[bytes], bytes] | None:
    try:
        from pylibsrtp._binding import ffi, lib  # type: ignore[import-not-found]

        # The owner of the libsrtp context, not the raw srtp_t inside it: pylibsrtp frees the
        # context (srtp_dealloc) when that owner is collected, and aiortc drops its Session
        # when a peer connection closes. A raw pointer kept here outlived it: a late packet
        # then wrote into freed memory and the process died later, in the garbage collector.
        context = session._srtp
        cdata = session._cdata
        buffer = session._buffer
        func = getattr(lib, func_name)
        ok = lib.srtp_err_status_ok
        errors = pylibsrtp.ERRORS
    except (AttributeError, ImportError):
        return None
    room = len(cdata) - trailer
    length = ffi.new("int *")

    def process(data: bytes) -> bytes:
        n = len(data)
        if n > room:
            raise ValueError("packet is too long")
        length[0] = n
        buffer[0:n] = data
        rc = func(context[0], cdata, length)
        if rc != ok:
            raise pylibsrtp.Error(errors[rc])
        return buffer[0 : length[0]]  # type: ignore[no-any-return]

    return process


def rtp_protector(session: pylibsrtp.Session) -> Callable[[bytes], bytes]:
    """`session.protect`, cheaper per call (see above)."""
    trailer = getattr(pylibsrtp, "SRTP_MAX_TRAILER_LEN", 144)
    return _fast(session, "srtp_protect", trailer) or session.protect


def rtp_unprotector(session: pylibsrtp.Session) -> Callable[[bytes], bytes]:
    """`session.unprotect`, cheaper per call (see above)."""
    return _fast(session, "srtp_unprotect", 0) or session.unprotect


@dataclass(slots=True)
class SrtpCounters:
    """Packets that were dropped rather than sent or played."""

    auth_failures: int = 0  # SRTP/SRTCP packets failing authentication or replay checks
    protect_failures: int = 0  # outgoing packets libsrtp refused (e.g. a repeated index)


class SrtpContext:
    """Protect what a leg sends and unprotect what it receives, for one suite and key pair.

    Received packets that fail authentication or the replay check (RFC 3711 §3.3, §3.3.2) are
    dropped and counted: an attacker or a stale far end must not crash or confuse the leg.
    """

    __slots__ = (
        "_protect",
        "_rx",
        "_tx",
        "_unprotect",
        "counters",
        "local_key",
        "remote_key",
        "suite",
    )

    def __init__(self, suite: str, local_key: bytes, remote_key: bytes) -> None:
        if suite not in SUITE_PROFILES:
            raise ValueError(f"unsupported SRTP suite {suite!r}")
        if len(local_key) != KEY_LENGTH or len(remote_key) != KEY_LENGTH:
            raise ValueError(f"SRTP master key and salt must be {KEY_LENGTH} octets")
        self.suite = suite
        self.local_key = local_key
        self.remote_key = remote_key
        profile = SUITE_PROFILES[suite]
        # Any SSRC in either direction: our SSRC is our own choice (RFC 3550 §8.1) and the far
        # end may change its own (a new source after a re-INVITE, RFC 3550 §8.2).
        self._tx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=local_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile
            )
        )
        self._rx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=remote_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile
            )
        )
        self._protect = rtp_protector(self._tx)
        self._unprotect = rtp_unprotector(self._rx)
        self.counters = SrtpCounters()

    def same_keys(self, suite: str, local_key: bytes, remote_key: bytes) -> bool:
        """Whether a new offer/answer kept this context's keys (RFC 4568 §7.1.4): then the
        sessions, with their rollover counters and replay windows, must stay."""
        return (suite, local_key, remote_key) == (self.suite, self.local_key, self.remote_key)

    def protect(self, packet: bytes) -> bytes | None:
        try:
            return self._protect(packet)
        except (pylibsrtp.Error, ValueError):
            self.counters.protect_failures += 1
            return None

    def protect_rtcp(self, packet: bytes) -> bytes | None:
        try:
            return self._tx.protect_rtcp(packet)
        except (pylibsrtp.Error, ValueError):
            self.counters.protect_failures += 1
            return None

    def unprotect(self, packet: bytes) -> bytes | None:
        try:
            return self._unprotect(packet)
        except (pylibsrtp.Error, ValueError, TypeError):
            self.counters.auth_failures += 1
            return None

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        try:
            return self._rx.unprotect_rtcp(packet)
        except (pylibsrtp.Error, ValueError, TypeError):
            self.counters.auth_failures += 1
            return None

    def __repr__(self) -> str:
        return f"<SrtpContext {self.suite}>"  # never the keys
