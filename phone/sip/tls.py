"""SIP over TLS (RFC 3261 §26.2, RFC 5922): the client TLS context and how a failed connection
is named.

Only the client side: a UA connects to its PBX, checks the PBX certificate against the system
store (or one CA file) and the PBX *domain* (RFC 5922 §7.2: the host part of the SIP URI it
registers to, not the address it resolved), and is reached back over the same connection (the
transport binds every connection to the port written into its Via and Contact). No Django here:
the worker passes the settings in.
"""

from __future__ import annotations

import functools
import ssl

# Failure kinds of TransportFailure.kind (phone.sip.transport): what a lamp can name.
CERTIFICATE = "certificate"  # the PBX certificate is not trusted or not for the PBX domain
TLS = "tls"  # the handshake failed otherwise (protocol version, ciphers, reset mid-handshake)
CONNECT = "connect"  # no connection at all (refused, unreachable)
TIMEOUT = "timeout"  # no connection or no handshake in time


@functools.lru_cache(maxsize=8)
def client_context(ca_file: str | None = None) -> ssl.SSLContext:
    """The TLS client context for PBX connections, one per CA file (loading the system store
    takes milliseconds: not once per line).

    `ca_file` (PEM, may hold several CAs) replaces the system store: a private PBX CA is then
    the only one trusted. Certificates are always verified and the host name always checked.
    """
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def failure_kind(exc: BaseException) -> str:
    """Which of the failure kinds above `exc` (from connecting + handshaking) is."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return CERTIFICATE
    if isinstance(exc, ssl.SSLError):
        return TLS
    if isinstance(exc, TimeoutError):
        return TIMEOUT
    return CONNECT


def failure_detail(exc: BaseException) -> str:
    """A short human text for logs and the lamp's tooltip, e.g. "Hostname mismatch, certificate
    is not valid for 'pbx.example.jp'." or "unable to get local issuer certificate"."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return str(exc.verify_message)
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return str(exc) or type(exc).__name__
