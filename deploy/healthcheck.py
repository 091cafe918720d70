#!/usr/bin/env python3
"""Container healthchecks of compose.yaml; the standard library only (the image has no curl).

    healthcheck.py http URL            the URL answers 2xx within 3 s
    healthcheck.py fresh PATH SECONDS  PATH was modified within SECONDS (a heartbeat file)
    healthcheck.py pid PATH            the process whose pid PATH holds is running

Exit status 0 = healthy, 1 = not (what Docker's HEALTHCHECK reads); the reason goes to stdout,
which `docker inspect` shows.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request


def http(url: str) -> str:
    # Django answers only the host names of ALLOWED_HOSTS: ask as the first of them.
    hosts = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "").split(",") if h.strip()]
    host = hosts[0] if hosts else "localhost"
    if host == "*":
        host = "localhost"
    elif host.startswith("."):
        host = "health" + host
    request = urllib.request.Request(
        url, headers={"Host": host, "X-Forwarded-Proto": "https", "Accept": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=3) as response:
        if not 200 <= response.status < 300:
            raise RuntimeError(f"HTTP {response.status}")
        return f"HTTP {response.status}"


def fresh(path: str, seconds: str) -> str:
    age = time.time() - os.path.getmtime(path)
    if age > float(seconds):
        raise RuntimeError(f"{path} last touched {age:.0f}s ago")
    return f"{path} touched {age:.1f}s ago"


def pid(path: str) -> str:
    with open(path) as f:
        number = int(f.read().strip())
    os.kill(number, 0)  # raises if no such process
    return f"pid {number} runs"


CHECKS = {"http": http, "fresh": fresh, "pid": pid}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in CHECKS:
        print(__doc__)
        return 2
    try:
        print(CHECKS[argv[0]](*argv[1:]))
    except (OSError, ValueError, RuntimeError, urllib.error.URLError) as exc:
        print(f"unhealthy: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
