"""Production mode in tests: `manage.py sipworker` processes on the test database and a
throwaway Redis (the `redis_url` fixture), started and killed at will."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def redis_layer_settings(redis_url: str) -> dict[str, Any]:
    """The CHANNEL_LAYERS production uses, pointed at this test's Redis."""
    from portal.settings import redis_channel_layer

    return {"default": redis_channel_layer(redis_url)}


class Workers:
    """sipworker processes; their output is printed when the test ends."""

    def __init__(self, redis_url: str, tmp_path: Path, **env: str) -> None:
        from tests.support.servers import database_url

        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "REDIS_URL": redis_url,
            "DEBUG": "true",
            **env,
        }
        self.redis_url = redis_url
        self.tmp_path = tmp_path
        self.procs: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"sipworker-{len(self.procs)}.log", "w+")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "sipworker"], cwd=ROOT, env=self.env, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.procs.append((proc, log))
        return proc

    def wait_live(self, count: int, timeout: float = 15) -> None:
        """Until exactly `count` sipworkers announce themselves in Redis."""
        import redis

        client = redis.from_url(self.redis_url)
        deadline = time.monotonic() + timeout
        while len(list(client.scan_iter("bp:worker:*"))) != count:
            assert time.monotonic() < deadline, f"{count} sipworkers did not come up"
            time.sleep(0.1)

    def owner_pid(self, user_id: int) -> int | None:
        """The pid of the sipworker whose lease holds the user's line (worker ids end in
        -<pid>-<n>)."""
        import redis

        owner = (redis.from_url(self.redis_url).get(f"bp:owner:{user_id}") or b"").decode()
        return int(owner.split("-")[-2]) if owner else None

    def close(self) -> None:
        # SIGTERM to all first: each un-REGISTERs its lines (1-2 s) side by side, and none takes
        # over the lines of one stopped before it only to be stopped next.
        for proc, _log in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, log in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            log.seek(0)
            print(log.read())
            log.close()


async def next_of(ws: Any, kind: str, timeout: float = 15) -> dict[str, Any]:
    """The next message of `kind` on a test WebSocket, skipping others."""
    while True:
        message = await ws.receive_json_from(timeout=timeout)
        if message["type"] == kind:
            return message
