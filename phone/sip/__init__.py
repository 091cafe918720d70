"""BrowserPhone's own SIP user agent core (sans-I/O, no Django).

Modules are named after protocol objects:

- ``errors``       SipParseError (the only exception parsers raise), SipError (caller misuse)
- ``uri``          SipUri, Address (name-addr/addr-spec), parse_uri, parse_address
- ``message``      SipRequest, SipResponse, Headers, Via, CSeq, parse_message, StreamFramer,
                   make_response, build_error_response
- ``sdp``          SessionDescription, build_offer, negotiate_answer, negotiated_media, is_hold
- ``auth``         DigestAuth, parse_challenges, digest_response (RFC 2617 / 7616)
- ``transaction``  TransactionLayer (RFC 3261 §17 + RFC 6026), events and Output
- ``dialog``       Dialog (RFC 3261 §12)
- ``registration`` Registration (RFC 3261 §10.2)
- ``useragent``    UserAgent: registration, calls, hold, transfer, MWI
- ``transport``    SipTransport: the only asyncio code, UDP and TCP

Everything except ``transport`` takes ``now`` (seconds, monotonic) and returns what to send and
what happened; ``next_timer()`` says when to call ``handle_timer(now)`` next.
"""
