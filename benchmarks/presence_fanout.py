"""Presence fan-out (BLF, issue 13): from a line's state change to the lamp update arriving at
every colleague's WebSocket (target p95 ≤ 200 ms). Prints figures; no assertions.

N users of one tenant each open the real phone WebSocket (benchmarks/fanout.py); one line
changes state in turn (idle → ringing → busy → idle ...) through phone.presence.publish, the
call the sipworker's Line makes after a message changed its state (store write, then the
tenant group send), and the time until each page's `presence` message with that state
arrives is recorded. Run with the in-memory channel layer and store (the embedded default)
and with Redis as both (a throwaway redis-server on a free port; REDIS_URL set, so the store
is the Redis hash several sipworkers would write).

    .venv/bin/python benchmarks/presence_fanout.py                  # 100 pages, 30 changes
    .venv/bin/python benchmarks/presence_fanout.py --pages 20 --changes 10 --layers memory
"""

from __future__ import annotations

import argparse
import time

from fanout import arrivals, migrate, open_page, open_pages, run_layers

STATES = ["ringing", "busy", "idle"]


def populate(pages: int):
    from django.contrib.auth import get_user_model

    from portal.models import Profile, SipAccount, Tenant

    migrate()
    tenant = Tenant.objects.create(code="bench", name="Bench", pbx_domain="pbx.invalid")
    users = []
    for i in range(pages + 1):
        user = get_user_model().objects.create_user(f"u{i}", password="x")
        Profile.objects.create(user=user, tenant=tenant, display_name=f"User {i}")
        SipAccount.objects.create(tenant=tenant, user=user, extension=str(2000 + i))
        users.append(user)
    return tenant, users


async def run(tenant, users, changes: int) -> list[float]:
    from phone import presence
    from phone.signalling import owners

    presence.reset_memory()
    worker = "bench-worker"
    if owners.enabled():  # the store reads entries of live workers only
        await owners.client().set(owners.worker_key(worker), "1", px=600_000)
    line, pages = users[0], users[1:]
    sockets = await open_pages(pages, "presence")  # (the snapshot)
    latencies: list[float] = []
    for n in range(changes):
        state = STATES[n % len(STATES)]
        entry = presence.Entry("2000", state, line.pk, time.time(), worker)
        start = time.perf_counter()
        await presence.publish(tenant.pk, entry)
        latencies += await arrivals(
            sockets,
            start,
            lambda m, s=state: m["type"] == "presence" and m["entries"][0]["state"] == s,
        )
    # A page that attaches now reads the last state from the store.
    ws = await open_page(pages[0], "presence")
    snapshot = ws.first
    assert snapshot["full"] and snapshot["entries"][0]["extension"] == "2000", snapshot
    await ws.disconnect()
    for ws in sockets:
        await ws.disconnect()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--layers", default="memory,redis")
    args = parser.parse_args()
    tenant, users = populate(args.pages)
    run_layers(
        args.layers,
        lambda: run(tenant, users, args.changes),
        f"pages={args.pages} changes={args.changes}",
        redis_store=True,  # the presence store in Redis too
    )


if __name__ == "__main__":
    main()
