"""Media for the SIP side of a call: RTP/RTCP, G.711, playout, DTMF, tones. No Django here.

Sans-I/O protocol objects: rtp (RFC 3550 packets, reports, statistics), g711, playout,
dtmf (RFC 4733), tones, analysis. The only asyncio code is leg (RtpLeg + the shared ticker).
"""
