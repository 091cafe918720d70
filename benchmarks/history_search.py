"""History and phonebook panels at scale on PostgreSQL: p50/p95 per request (issue 5).

    .venv/bin/python benchmarks/history_search.py [--records 1000000] [--contacts 100000]

Builds (once; reused while the sizes match) a tenant with 1 000 000 CallRecords — a heavy user
holding a fifth of them, the rest spread over 49 colleagues — and a shared phonebook of 100 000
contacts, in its own database (BENCH_DATABASE_URL, default browserphone_bench on the local
PostgreSQL). Then it times full requests through Django (view + query + template) with the test
client, logged in as the heavy user, and prints p50/p95 per request kind. Target: p95 ≤ 100 ms,
and ≤ 50 ms for the phonebook's name and kana search (Japanese text, whatever the locale).
"""

import argparse
import io
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/browserphone_bench"


def ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


KANA = "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワ"
NAMES = ["株式会社", "有限会社", "商事", "工業", "物産", "電機", "建設", "運輸", "銀行", "病院"]


def random_kana(rng, n):
    return "".join(rng.choice(KANA) for _ in range(n))


def build(records: int, contacts: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from phone.models import CallRecord, Contact, Phonebook
    from portal.models import Profile, Tenant

    tenant, _ = Tenant.objects.get_or_create(
        code="bench", defaults={"name": "Bench", "pbx_domain": "pbx.bench"}
    )
    User = get_user_model()
    users = []
    for i in range(50):
        user, created = User.objects.get_or_create(username=f"bench{i:02d}")
        if created:
            user.set_password("bench-password")
            user.save()
            Profile.objects.create(user=user, tenant=tenant, display_name=f"社員{i:02d}")
        users.append(user)
    heavy = users[0]
    rng = random.Random(42)

    if CallRecord.objects.filter(tenant=tenant).count() != records:
        print(f"building {records} call records …", flush=True)
        CallRecord.objects.filter(tenant=tenant).delete()
        start = datetime(2024, 1, 1, tzinfo=UTC)
        buf = io.StringIO()
        directions = ["out", "in", "missed", "rejected"]
        for i in range(records):
            user = heavy if i % 5 == 0 else users[1 + i % 49]
            number = f"0{rng.randint(3, 9)}0{rng.randint(10000000, 99999999)}"
            started = start + timedelta(seconds=i * 30 + rng.randint(0, 29))
            direction = directions[rng.randint(0, 3)]
            answered = started + timedelta(seconds=5) if direction in ("out", "in") else None
            ended = (answered or started) + timedelta(seconds=rng.randint(1, 600))
            name = f"{rng.choice(NAMES)}{random_kana(rng, 3)}" if i % 3 else ""
            buf.write(
                "\t".join(
                    [
                        str(tenant.pk),
                        str(user.pk),
                        direction,
                        number,
                        number,
                        name,
                        "0312345678",
                        started.isoformat(),
                        answered.isoformat() if answered else r"\N",
                        ended.isoformat(),
                        f"bench-{i}@pbx",
                        "",
                        str(int((ended - answered).total_seconds())) if answered else r"\N",
                        "",
                        "",
                    ]
                )
                + "\n"
            )
        buf.seek(0)
        columns = (
            "tenant_id, user_id, direction, remote_number, remote_number_normalized, remote_name,"
            " called_number, started_at, answered_at, ended_at, sip_call_id, answered_by_name,"
            " talk_seconds, end_reason, worker"
        )
        with (
            connection.cursor() as cursor,
            cursor.copy(f"COPY phone_callrecord ({columns}) FROM STDIN") as copy,
        ):
            copy.write(buf.read())
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE phone_callrecord")

    book, _ = Phonebook.objects.get_or_create(tenant=tenant, owner=None, name="共有電話帳")
    if Contact.objects.filter(phonebook=book).count() != contacts:
        print(f"building {contacts} contacts …", flush=True)
        Contact.objects.filter(phonebook=book).delete()
        batch = []
        for i in range(contacts):
            kana = random_kana(rng, 6)
            number = f"0{rng.randint(3, 9)}{rng.randint(10000000, 99999999)}"
            batch.append(
                Contact(
                    tenant=tenant,
                    phonebook=book,
                    name=f"{rng.choice(NAMES)}{kana}{i}",
                    kana=kana,
                    number=number,
                    number_normalized=number,
                )
            )
        Contact.objects.bulk_create(batch, batch_size=5000)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE phone_contact")
    return {"heavy": heavy, "book": book}


def timed(client, url, params, runs):
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        response = client.get(url, params, HTTP_HX_REQUEST="true")
        samples.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200, (url, params, response.status_code)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    ensure_database(url)
    setup_django(url)
    data = build(args.records, args.contacts)

    from django.conf import settings
    from django.test import Client
    from django.urls import reverse

    settings.ALLOWED_HOSTS = ["testserver"]
    client = Client()
    client.force_login(data["heavy"], backend="django.contrib.auth.backends.ModelBackend")
    history, phonebook = reverse("phone:history"), reverse("phone:phonebook")
    heavy_rows = data["heavy"].call_records.count()
    cases = [
        ("history: newest page", history, {}),
        ("history: type 不在", history, {"type": "missed"}),
        ("history: number fragment", history, {"q": "090-123"}),
        ("history: name", history, {"q": "株式会社"}),
        ("history: kana (hiragana typed)", history, {"q": "あいう"}),
        ("history: 2-character name", history, {"q": "商事"}),
        ("history: rare name (no match)", history, {"q": "存在しない名前"}),
        ("history: sort by name", history, {"sort": "remote"}),
        ("history: sort by talk time", history, {"sort": "-answered"}),
        ("history: page 400", history, {"page": "400"}),
        ("phonebook: first page", phonebook, {"book": data["book"].pk}),
        ("phonebook: name", phonebook, {"book": data["book"].pk, "q": "電機"}),
        ("phonebook: kana", phonebook, {"book": data["book"].pk, "q": "あいう"}),
        ("phonebook: number fragment", phonebook, {"book": data["book"].pk, "q": "03-1234"}),
        (
            "phonebook: rare name (no match)",
            phonebook,
            {"book": data["book"].pk, "q": "存在しない"},
        ),
    ]
    print(
        f"\n{args.records} call records ({heavy_rows} for the user measured), "
        f"{args.contacts} contacts; {args.runs} requests each (htmx fragment, full view)\n"
    )
    print(f"{'request':34} {'p50 ms':>8} {'p95 ms':>8}")
    worst = worst_phonebook = 0.0
    for label, path, params in cases:
        p50, p95 = timed(client, path, params, args.runs)
        worst = max(worst, p95)
        if label.startswith("phonebook:") and "q" in params:
            worst_phonebook = max(worst_phonebook, p95)
        print(f"{label:34} {p50:8.1f} {p95:8.1f}")
    print(f"\nworst p95: {worst:.1f} ms (target ≤ 100 ms)")
    print(f"worst phonebook search p95: {worst_phonebook:.1f} ms (target ≤ 50 ms)")


if __name__ == "__main__":
    main()
