"""Exception types of the SIP core.

Every parser in this package raises :class:`SipParseError` (and only that) on malformed input, so a
transport can wrap one ``except SipParseError`` around untrusted bytes.
"""

from __future__ import annotations


class SipParseError(ValueError):
    """Malformed SIP message, URI, header, SDP body or challenge."""


class SipError(Exception):
    """Misuse of the protocol core by its caller (not caused by network input)."""
