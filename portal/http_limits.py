"""A request line too long for daphne gets an answer (414), not a dropped connection.

daphne's HTTP layer is Twisted's: past its line limit (16 KiB) Twisted closes the connection
without a word, before Django sees the request, and daphne has no setting for it. Behind a
reverse proxy the proxy answers first (nginx: 414); run bare, the browser would just see the
connection reset. portal.guards answers 414 for anything that reaches Django.
"""

RESPONSE = b"HTTP/1.1 414 URI Too Long\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def answer_overlong_request_lines() -> None:
    try:
        from twisted.web.http import HTTPChannel
    except ImportError:  # not under daphne: nothing to do
        return

    def line_too_long(self, line):
        self.transport.write(RESPONSE)
        self.loseConnection()

    HTTPChannel.lineLengthExceeded = line_too_long
