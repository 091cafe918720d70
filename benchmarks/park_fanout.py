"""Park fan-out: from the park action to the slot update arriving at every member's WebSocket
(seed 3-4; target p95 ≤ 200 ms). Prints figures; no assertions.

N users of one park group each open the real phone WebSocket (benchmarks/fanout.py); one of
them parks calls in slots 1..6 in turn through phone.actions.do_park (the action the
sipworker's line runs), and the time until each member's `park.slots` message arrives is
recorded. Run with the in-memory channel layer (the embedded default) and with the Redis layer
(a throwaway redis-server on a free port).

    .venv/bin/python benchmarks/park_fanout.py                  # 100 members, 30 parks each
    .venv/bin/python benchmarks/park_fanout.py --members 20 --parks 10 --layers memory
"""

from __future__ import annotations

import argparse
import time

from channels.db import database_sync_to_async
from fanout import arrivals, migrate, open_pages, run_layers


def populate(members: int):
    from django.contrib.auth import get_user_model

    from phone.models import ParkGroup
    from portal.models import Profile, Tenant

    migrate()
    tenant = Tenant.objects.create(code="bench", name="Bench", pbx_domain="pbx.invalid")
    group = ParkGroup.objects.create(tenant=tenant, name="All")
    users = []
    for i in range(members):
        user = get_user_model().objects.create_user(f"u{i}", password="x")
        Profile.objects.create(user=user, tenant=tenant, display_name=f"User {i}")
        group.members.add(user)
        users.append(user)
    return group, users


async def run(group, users, parks: int) -> list[float]:
    from phone import actions
    from phone.models import ParkSlot

    sockets = await open_pages(users, "park.slots")
    latencies: list[float] = []
    parker = users[0]
    for n in range(parks):
        slot = n % 6 + 1
        await database_sync_to_async(
            lambda s=slot: ParkSlot.objects.filter(group=group, number=s).update(call_id="")
        )()
        start = time.perf_counter()
        await database_sync_to_async(actions.do_park)(
            parker.pk, group.pk, slot, f"c{n}@bench", "bench", "0312345678", "山田"
        )
        latencies += await arrivals(
            sockets,
            start,
            lambda m, s=slot: m["type"] == "park.slots" and bool(m["slots"][s - 1]["caller"]),
        )
    for ws in sockets:
        await ws.disconnect()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--parks", type=int, default=30)
    parser.add_argument("--layers", default="memory,redis")
    args = parser.parse_args()
    group, users = populate(args.members)
    run_layers(
        args.layers,
        lambda: run(group, users, args.parks),
        f"members={args.members} parks={args.parks}",
    )


if __name__ == "__main__":
    main()
