"""A 100 000-row phonebook CSV import while calls are logged, on SQLite and PostgreSQL (issue 10).

    .venv/bin/python benchmarks/import_contacts.py [--rows 100000] [--backend sqlite|postgres]

For each database (a fresh SQLite file in a temporary directory, with the embedded default's
options; BENCH_IMPORT_DATABASE_URL or browserphone_bench_import on the local PostgreSQL, dropped
and created afresh) it
queues the import as the panel does (the Celery task, run by the embedded worker's threads),
and while it runs writes a call's history row every 20 ms the way the sipworker does
(do_open_call, then do_close_call) and logs a user in through the login form every 200 ms.
Twice: a new book (100 000 contacts added), then the same file with every name changed
(100 000 updated).  It prints the import's total time, how long its one write transaction held
the database (on SQLite: the write lock), and the latency of the history writes and logins
that ran meanwhile (p50 / p95 / max).
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/browserphone_bench_import"
KANA = "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワ"
WORDS = ["株式会社", "有限会社", "商事", "工業", "物産", "電機", "建設", "運輸", "銀行", "病院"]
PASSWORD = "bench-password-1"


def csv_text(rows: int, *, suffix: str = "") -> str:
    rng = random.Random(7)
    lines = ["名前,カナ,電話番号"]
    for i in range(rows):
        kana = "".join(rng.choice(KANA) for _ in range(6))
        lines.append(
            f"{rng.choice(WORDS)}{kana}{suffix},{kana},03-{i // 10000:04d}-{i % 10000:04d}"
        )
    return "\n".join(lines) + "\n"


def percentiles(samples: list[float]) -> str:
    if not samples:
        return "no samples"
    ordered = sorted(samples)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return (
        f"p50 {statistics.median(ordered):7.1f}  p95 {p95:7.1f}  max {ordered[-1]:7.1f} ms"
        f"  ({len(ordered)} samples)"
    )


class Meanwhile:
    """While the import runs: a call's history row every 20 ms, as the sipworker writes it
    (do_open_call when it starts, do_close_call when it ends), and a login through the form
    every 200 ms, each timed."""

    def __init__(self, result, user, label):
        self.result, self.user, self.label = result, user, label
        self.history: list[float] = []
        self.logins: list[float] = []
        self.failures: list[str] = []
        self.threads = [
            threading.Thread(target=self.calls, daemon=True),
            threading.Thread(target=self.login, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def join(self):
        for thread in self.threads:
            thread.join()

    def calls(self):
        from django.utils import timezone

        from phone import actions

        n = 0
        while not self.result.ready():
            n += 1
            t0 = time.perf_counter()
            try:
                record_id = actions.do_open_call(
                    self.user.pk, "bench-worker",
                    {"direction": "in", "remote_number": f"0312{n:06d}",
                     "started_at": timezone.now(), "sip_call_id": f"bench-{self.label}-{n}"},
                )  # fmt: skip
                actions.do_close_call(
                    self.user.pk, record_id, {"ended_at": timezone.now(), "end_reason": "bye"}
                )
                self.history.append((time.perf_counter() - t0) * 1000)
            except Exception as exc:  # "database is locked" is what this would show
                self.failures.append(f"history: {exc!r}")
            time.sleep(0.02)

    def login(self):
        from django.test import Client

        client = Client()
        while not self.result.ready():
            t0 = time.perf_counter()
            response = client.post("/login/", {"username": "bench", "password": PASSWORD})
            if response.status_code == 302:
                self.logins.append((time.perf_counter() - t0) * 1000)
            else:
                self.failures.append(f"login: HTTP {response.status_code}")
            client.logout()
            time.sleep(0.2)


def prepare(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def run(backend: str, rows: int, directory: str | None) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{directory or tempfile.mkdtemp(prefix='bench-import-')}/db.sqlite3"
    else:
        url = os.environ.get("BENCH_IMPORT_DATABASE_URL", DEFAULT_PG_URL)
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
    prepare(url)

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection

    from phone.models import CallRecord, Contact, Phonebook
    from phone.tasks import import_contacts_task
    from portal import background
    from portal.models import Profile, Tenant

    settings.ALLOWED_HOSTS = ["testserver"]
    tenant = Tenant.objects.create(code="bench", name="Bench", pbx_domain="pbx.bench")
    user = get_user_model().objects.create_user("bench", password=PASSWORD)
    Profile.objects.create(user=user, tenant=tenant, display_name="社員")
    book = Phonebook.objects.create(tenant=tenant, name="共有電話帳")
    background.wait_until_ready()

    print(f"\n== {connection.vendor}: {rows} rows ==", flush=True)
    for label, suffix in (("new book", ""), ("every name changed", "変")):
        text = csv_text(rows, suffix=suffix)
        started = time.monotonic()
        result = import_contacts_task.delay(book.pk, text)
        meanwhile = Meanwhile(result, user, label)
        while not result.ready():  # result.get() is refused in a process running a worker
            time.sleep(0.05)
        report = result.result
        total = time.monotonic() - started
        meanwhile.join()
        history, logins, failures = meanwhile.history, meanwhile.logins, meanwhile.failures
        assert not report["errors"], report["errors"][:5]
        print(f"-- {label}: {report['created']} added, {report['updated']} updated")
        print(f"   total {total:6.2f} s (check, no lock: {report['check_seconds']:.2f} s)")
        held = "write lock held" if connection.vendor == "sqlite" else "transaction open"
        print(f"   {held}: {report['write_seconds']:.2f} s")
        print(f"   history writes meanwhile: {percentiles(history)}")
        print(f"   logins meanwhile:         {percentiles(logins)}")
        print(f"   failures: {len(failures)} {failures[:3]}", flush=True)
    assert Contact.objects.filter(phonebook=book).count() == rows
    assert CallRecord.objects.filter(worker="").count() == CallRecord.objects.count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres"])
    parser.add_argument("--dir", help="where the SQLite database goes (default: a new temp dir)")
    args = parser.parse_args()
    if args.backend:
        run(args.backend, args.rows, args.dir)
        return
    for backend in ("sqlite", "postgres"):  # one process each: Django is set up once
        with tempfile.TemporaryDirectory(prefix="bench-import-") as directory:
            subprocess.run(
                [sys.executable, __file__, "--backend", backend, "--rows", str(args.rows),
                 "--dir", directory],
                check=True,
            )  # fmt: skip


if __name__ == "__main__":
    main()
