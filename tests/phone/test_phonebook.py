"""The 電話帳 panel: fragments, search, inline editing, permissions, CSV import/export."""

import csv
import importlib
import io
import re
import time

import pytest
from django.apps import apps as django_apps
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from phone import phonebook
from phone.access import personal_phonebook
from phone.models import Contact, Phonebook
from phone.views import phonebook as views_phonebook
from tests.portal.admin_forms import admin_form_data

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def books(cast):
    shared_a = Phonebook.objects.create(tenant=cast.tenant_a, name="共有")
    shared_b = Phonebook.objects.create(tenant=cast.tenant_b, name="B共有")
    for book, name, kana, number in [
        (shared_a, "オフィス太郎", "オフィスタロウ", "9220"),
        (shared_a, "オフィス花子", "オフィスハナコ", "7966"),
        (shared_a, "株式会社テスト", "カブシキガイシャテスト", "0359890925"),
        (shared_b, "B社", "ビーシャ", "0311112222"),
    ]:
        Contact.objects.create(
            tenant=book.tenant, phonebook=book, name=name, kana=kana, number=number
        )
    return {"a": shared_a, "b": shared_b, "alice": personal_phonebook(cast.alice)}


def names(response):
    # Plain (non-htmx) requests: partial renders do not reach the test client's context.
    return [c.name for c in response.context["contacts"]]


def test_it_serves_the_panel_as_a_fragment_to_htmx_and_as_a_page_otherwise(cast, books, login):
    client = login(cast.alice)
    url = reverse("phone:phonebook") + f"?book={books['a'].pk}"
    fragment = client.get(url, **HTMX).content.decode()
    page = client.get(url).content.decode()
    assert fragment.lstrip().startswith('<div class="phonebook"')
    assert "<html" not in fragment
    assert "<html" in page and 'data-testid="phonebook-panel"' in page
    assert fragment.count('data-testid="contact-row"') == 3
    assert fragment.count('data-testid="contact-call"') == 3


def test_it_opens_the_personal_phonebook_by_default(cast, books, login):
    response = login(cast.alice).get(reverse("phone:phonebook"))
    assert response.context["book"] == books["alice"]
    listed = {b.pk for b in response.context["books"]}
    assert listed == {books["alice"].pk, books["a"].pk}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("花子", ["オフィス花子"]),
        ("おふぃす", ["オフィス太郎", "オフィス花子"]),  # hiragana finds katakana
        ("ｵﾌｨｽﾀﾛｳ", ["オフィス太郎"]),  # half-width kana
        ("03-5989", ["株式会社テスト"]),  # hyphens ignored
        ("０３５９ ８９", ["株式会社テスト"]),  # full-width digits, spaces ignored
        ("922", ["オフィス太郎"]),
        ("ビーシャ", []),  # another tenant's contact
    ],
)
def test_it_searches_by_name_kana_or_number_fragment(cast, books, login, query, expected):
    response = login(cast.alice).get(
        reverse("phone:phonebook"), {"book": books["a"].pk, "q": query}
    )
    assert sorted(names(response)) == sorted(expected)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("花", ["オフィス花子"]),  # one character: the unigrams of the gram index
        ("ィス", ["オフィス太郎", "オフィス花子"]),
        ("abc", ["ABC商事"]),  # Latin letters in either case
        ("ＡＢＣ", ["ABC商事"]),  # full-width, folded
        ("商事", ["ABC商事"]),
        ("事商", []),  # every character there, not in a row
    ],
)
def test_it_finds_any_part_of_a_japanese_or_latin_name(cast, books, login, query, expected):
    """On PostgreSQL through the gram indexes (migration 0006), on SQLite by a scan: the same
    answers."""
    Contact.objects.create(tenant=cast.tenant_a, phonebook=books["a"], name="ABC商事", number="1")
    response = login(cast.alice).get(
        reverse("phone:phonebook"), {"book": books["a"].pk, "q": query}
    )
    assert sorted(names(response)) == sorted(expected)


def test_it_adds_a_contact_inline_and_returns_its_row(cast, books, login):
    client = login(cast.alice)
    url = reverse("phone:contact_new", args=[books["alice"].pk])
    form = client.get(url, **HTMX).content.decode()
    assert 'data-testid="contact-form"' in form
    response = client.post(
        url, {"name": "山田", "kana": "やまだ", "number": "090-1111-2222"}, **HTMX
    )
    body = response.content.decode()
    assert 'data-testid="contact-row"' in body and "09011112222" in body
    contact = Contact.objects.get(phonebook=books["alice"])
    assert (contact.kana, contact.number, contact.tenant) == (
        "ヤマダ",
        "09011112222",
        cast.tenant_a,
    )


def test_it_shows_field_errors_and_saves_nothing_for_a_bad_number(cast, books, login):
    client = login(cast.alice)
    url = reverse("phone:contact_new", args=[books["alice"].pk])
    response = client.post(url, {"name": "山田", "kana": "", "number": "03-abcd"}, **HTMX)
    assert response.status_code == 200
    assert 'data-testid="contact-error-number"' in response.content.decode()
    assert "半角数字" in response.content.decode()
    assert not Contact.objects.filter(phonebook=books["alice"]).exists()


def test_it_edits_and_deletes_inline(cast, books, login):
    client = login(cast.alice)
    contact = Contact.objects.create(
        tenant=cast.tenant_a, phonebook=books["alice"], name="旧", number="1001"
    )
    url = reverse("phone:contact_edit", args=[contact.pk])
    response = client.post(url, {"name": "新", "kana": "シン", "number": "1002"}, **HTMX)
    assert "新" in response.content.decode()
    contact.refresh_from_db()
    assert (contact.name, contact.number) == ("新", "1002")
    response = client.post(reverse("phone:contact_delete", args=[contact.pk]), **HTMX)
    assert response.status_code == 200 and response.content == b""
    assert not Contact.objects.filter(pk=contact.pk).exists()


def test_it_lets_only_tenant_admins_edit_the_shared_phonebook(cast, books, login):
    contact = books["a"].contacts.first()
    alice = login(cast.alice)
    page = alice.get(reverse("phone:phonebook"), {"book": books["a"].pk})
    assert not page.context["editable"]
    assert 'data-testid="contact-add"' not in page.content.decode()
    new_url = reverse("phone:contact_new", args=[books["a"].pk])
    assert alice.post(new_url, {"name": "x", "number": "1"}).status_code == 403
    edit_url = reverse("phone:contact_edit", args=[contact.pk])
    assert alice.post(edit_url, {"name": "x", "number": "1"}).status_code == 403
    delete_url = reverse("phone:contact_delete", args=[contact.pk])
    assert alice.post(delete_url).status_code == 403
    admin = login(cast.admin_a)
    assert admin.post(edit_url, {"name": "改名", "number": "9220"}, **HTMX).status_code == 200
    contact.refresh_from_db()
    assert contact.name == "改名"


def test_it_hides_other_tenants_and_other_users_phonebooks(cast, books, login):
    bob_book = personal_phonebook(cast.bob)
    bob_contact = Contact.objects.create(
        tenant=cast.tenant_a, phonebook=bob_book, name="ボブの", number="1"
    )
    b_contact = books["b"].contacts.first()
    client = login(cast.alice)
    for book in (books["b"], bob_book):
        assert client.get(reverse("phone:phonebook"), {"book": book.pk}).status_code == 404
        assert client.get(reverse("phone:phonebook_export", args=[book.pk])).status_code == 404
        assert client.post(reverse("phone:contact_new", args=[book.pk])).status_code == 404
    for contact in (b_contact, bob_contact):
        for name in ("contact_row", "contact_edit", "contact_delete"):
            method = client.post if name == "contact_delete" else client.get
            assert method(reverse(f"phone:{name}", args=[contact.pk])).status_code == 404
    assert Contact.objects.filter(pk__in=[b_contact.pk, bob_contact.pk]).count() == 2
    assert client.get(reverse("phone:phonebook"), {"book": "junk"}).status_code == 404


def csv_upload(text, encoding="utf-8"):
    return SimpleUploadedFile("book.csv", text.encode(encoding), content_type="text/csv")


def test_it_imports_a_csv_all_or_nothing_with_per_row_errors(cast, books, login):
    client = login(cast.alice)
    url = reverse("phone:phonebook_import", args=[books["alice"].pk])
    bad = "名前,カナ,電話番号\n山田,やまだ,03-1111-2222\n佐藤,サトウ,abc\n鈴木,スズキ,\n"
    response = client.post(url, {"file": csv_upload(bad)}, **HTMX)
    body = response.content.decode()
    assert body.count('data-testid="import-error-row"') == 2
    assert "3" in body and "4" in body  # line numbers, counting the header as line 1
    assert not Contact.objects.filter(phonebook=books["alice"]).exists()

    good = "name,kana,number\n山田,やまだ,03-1111-2222\n佐藤,ｻﾄｳ,0901234\n"
    response = client.post(url, {"file": csv_upload(good, "cp932")}, **HTMX)
    assert 'data-testid="import-done"' in response.content.decode()
    contacts = {c.name: c for c in Contact.objects.filter(phonebook=books["alice"])}
    assert contacts["佐藤"].kana == "サトウ" and contacts["山田"].number == "0311112222"


def test_it_rejects_a_file_that_is_not_text(cast, books, login):
    client = login(cast.alice)
    url = reverse("phone:phonebook_import", args=[books["alice"].pk])
    response = client.post(
        url, {"file": csv_upload("").__class__("x.csv", b"\xff\xfe\x00\x81\xff")}
    )
    assert 'data-testid="import-errors"' in response.content.decode()


def poll(client, url):
    return client.get(url, **HTMX).content.decode()


@pytest.mark.django_db(transaction=True)  # the embedded Celery worker reads committed rows
def test_it_runs_a_large_import_in_celery_and_reports_progress(cast, books, login, monkeypatch):
    monkeypatch.setattr(views_phonebook, "SYNC_IMPORT_MAX_ROWS", 5)
    rows = "".join(f"顧客{i},コキャク,0312340{i:03d}\n" for i in range(40))
    client = login(cast.alice)
    url = reverse("phone:phonebook_import", args=[books["alice"].pk])
    response = client.post(url, {"file": csv_upload("名前,カナ,電話番号\n" + rows)}, **HTMX)
    body = response.content.decode()
    assert 'data-testid="import-progress"' in body
    progress_url = re.search(r'hx-get="([^"]+/import/[^"]+/)"', body).group(1)
    # The page polls until the worker (threads of this process, not the request) is done.
    deadline = time.monotonic() + 20
    while 'data-testid="import-done"' not in (done := poll(client, progress_url)):
        assert 'data-testid="import-progress"' in done
        assert time.monotonic() < deadline, "the import did not finish"
        time.sleep(0.05)
    assert Contact.objects.filter(phonebook=books["alice"]).count() == 40
    # Nobody else reads that task's progress: not through alice's book (404), nor by replaying
    # the task id against a book they can see (403: the task is not in their session).
    assert login(cast.bob).get(progress_url).status_code == 404
    replay = progress_url.replace(f"/{books['alice'].pk}/", f"/{books['a'].pk}/")
    assert login(cast.bob).get(replay).status_code == 403


def test_it_exports_csv_that_round_trips(cast, books, login):
    Contact.objects.create(
        tenant=cast.tenant_a, phonebook=books["alice"], name="=cmd()", number="0311"
    )
    response = login(cast.alice).get(reverse("phone:phonebook_export", args=[books["a"].pk]))
    text = response.content.decode("utf-8-sig")
    assert response["Content-Type"].startswith("text/csv")
    assert text.splitlines()[0] == "名前,カナ,電話番号"
    assert "オフィス花子,オフィスハナコ,7966" in text and "B社" not in text
    personal = login(cast.alice).get(reverse("phone:phonebook_export", args=[books["alice"].pk]))
    assert "'=cmd()" in personal.content.decode("utf-8-sig")  # spreadsheet formulas are defused


def test_it_exports_utf8_with_a_bom_for_excel(cast, books, login):
    # Excel on Japanese Windows reads a CSV without a BOM as Shift_JIS: names become mojibake.
    response = login(cast.alice).get(reverse("phone:phonebook_export", args=[books["a"].pk]))
    assert response.content.startswith("\ufeff名前,カナ,電話番号".encode())
    assert response["Content-Type"] == "text/csv; charset=utf-8"


@pytest.mark.parametrize(
    "name",
    ['=HYPERLINK("http://evil")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\t=1+1", "\r=1+1"],
)
def test_it_defuses_every_formula_cell_in_the_export(cast, books, login, name):
    Contact.objects.create(tenant=cast.tenant_a, phonebook=books["alice"], name=name, number="1")
    response = login(cast.alice).get(reverse("phone:phonebook_export", args=[books["alice"].pk]))
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"), newline="")))
    assert rows[1][0] == "'" + name  # shown as text, never run; the value itself is unchanged


def test_it_stores_kana_entered_in_the_admin_so_search_finds_it(cast, books, login):
    # The admin (a tenant admin's inline on the shared phonebook) skips the panel's form:
    # the model itself folds the reading, so every way of typing it finds the contact.
    client = login(cast.admin_a)
    url = reverse("admin:phone_phonebook_change", args=[books["a"].pk])
    data = admin_form_data(client.get(url))
    prefix = "contacts"
    total = int(data[f"{prefix}-TOTAL_FORMS"])
    data.update({
        f"{prefix}-{total}-name": "山田太郎", f"{prefix}-{total}-kana": " やまだ たろう ",
        f"{prefix}-{total}-number": "0312340000", f"{prefix}-TOTAL_FORMS": str(total + 1),
    })  # fmt: skip
    assert client.post(url, data).status_code == 302
    assert Contact.objects.get(number="0312340000").kana == "ヤマダ タロウ"
    alice = login(cast.alice)
    for query in ("ヤマダ", "ﾔﾏﾀﾞ", "やまだ"):
        response = alice.get(reverse("phone:phonebook"), {"book": books["a"].pk, "q": query})
        assert names(response) == ["山田太郎"], query


def test_it_folds_kana_written_by_code_and_rows_stored_before(cast, books):
    contact = Contact.objects.create(
        tenant=cast.tenant_a, phonebook=books["a"], name="佐藤", kana="ｻﾄｳ", number="11"
    )
    assert contact.kana == "サトウ"
    # A row stored before the model folded kana (written around save()): the data migration
    # brings it in line.
    Contact.objects.filter(pk=contact.pk).update(kana="さとう ")
    migration = importlib.import_module("phone.migrations.0003_normalise_contact_kana")
    migration.normalise_kana(django_apps, None)
    contact.refresh_from_db()
    assert contact.kana == "サトウ"


# --- CSV import: encodings, bad files, scale (issue 10) ------------------------------------------


def import_file(client, book, data: bytes):
    url = reverse("phone:phonebook_import", args=[book.pk])
    upload = SimpleUploadedFile("book.csv", data, content_type="text/csv")
    response = client.post(url, {"file": upload}, **HTMX)
    assert response.status_code == 200
    return response.content.decode()


def error_lines(body):
    return [int(n) for n in re.findall(r'data-testid="import-error-row">\D*(\d+)', body)]


GOOD = "名前,カナ,電話番号\n山田,やまだ,03-1111-2222\n佐藤,ｻﾄｳ,0901234\n"


@pytest.mark.parametrize(
    "data",
    [
        GOOD.encode("utf-8"),
        "\ufeff".encode() + GOOD.encode("utf-8"),
        GOOD.replace("\n", "\r\n").encode("cp932"),  # Excel on Japanese Windows
        GOOD.encode("utf-16"),  # with a BOM, as Excel's "Unicode text"
        GOOD.encode("utf-16-le"),
        GOOD.encode("utf-16-be"),
    ],
    ids=["utf-8", "utf-8-bom", "shift_jis", "utf-16", "utf-16-le", "utf-16-be"],
)
def test_it_reads_the_encodings_spreadsheets_write(cast, books, login, data):
    body = import_file(login(cast.alice), books["alice"], data)
    assert 'data-testid="import-done"' in body, body
    contacts = {
        c.name: (c.kana, c.number) for c in Contact.objects.filter(phonebook=books["alice"])
    }
    assert contacts == {"山田": ("ヤマダ", "0311112222"), "佐藤": ("サトウ", "0901234")}


@pytest.mark.parametrize(
    "bad", [b"\x81\xff\xfe,x,1\n", "Café,,1\n".encode("latin-1")], ids=["garbage", "latin-1"]
)
def test_it_names_the_line_it_cannot_read_and_imports_nothing(cast, books, login, bad):
    # Not "read" as Shift_JIS mojibake either: the lines before were Japanese UTF-8.
    data = GOOD.encode("utf-8") + "鈴木,スズキ,0311\n".encode() + bad
    body = import_file(login(cast.alice), books["alice"], data)
    assert error_lines(body) == [5]
    assert not Contact.objects.filter(phonebook=books["alice"]).exists()


def test_it_reports_ragged_rows_by_line_and_imports_nothing(cast, books, login):
    text = (
        "名前,カナ,電話番号\n"
        "山田,やまだ,0311,\n"  # an empty trailing cell: fine
        "佐藤,サトウ,0322,余分\n"  # one cell too many
        "鈴木,0333\n"  # one too few
        "\n"  # a blank line: skipped
        "田中,タナカ,0344\n"
    )
    body = import_file(login(cast.alice), books["alice"], text.encode())
    assert error_lines(body) == [3, 4]
    assert not Contact.objects.filter(phonebook=books["alice"]).exists()


@pytest.mark.parametrize(
    ("row", "column"),
    [
        ("山\x00田,ヤマダ,0311", "名前"),
        ("山田,ヤマダ,03-abcd", "電話番号"),
        ("x" * 101 + ",,1", "名前"),
    ],
    ids=["nul", "bad-number", "long-name"],
)
def test_it_refuses_bad_cells_by_line_and_column(cast, books, login, row, column):
    body = import_file(login(cast.alice), books["alice"], f"{GOOD}{row}\n".encode())
    assert error_lines(body) == [4] and column in body
    assert not Contact.objects.filter(phonebook=books["alice"]).exists()


def test_it_refuses_oversize_files_without_importing_any_of_them(cast, books, login, monkeypatch):
    client = login(cast.alice)
    monkeypatch.setattr(views_phonebook.CsvUploadForm, "MAX_BYTES", 40)
    body = import_file(client, books["alice"], GOOD.encode() * 2)
    assert 'data-testid="import-errors"' in body and "import-error-row" not in body
    monkeypatch.setattr(views_phonebook.CsvUploadForm, "MAX_BYTES", 1024)
    monkeypatch.setattr(phonebook, "MAX_ROWS", 2)
    body = import_file(client, books["alice"], (GOOD + "鈴木,スズキ,0311\n").encode())
    assert error_lines(body) == [4]
    assert not Contact.objects.filter(phonebook=books["alice"]).exists()


def test_it_round_trips_an_exported_book_formula_cells_and_all(cast, login):
    source = Phonebook.objects.create(tenant=cast.tenant_a, name="source")
    copy = Phonebook.objects.create(tenant=cast.tenant_a, name="copy")
    for name, kana, number in [
        ('=HYPERLINK("http://evil")', "", "0311"),
        ("-2+3", "マイナス", "+81312345678"),
        ("@SUM(A1)", "", "0322"),
        ("代表 (受付)", "ダイヒョウ", "0333"),
        ("代表 (営業)", "ダイヒョウ", "0333"),  # two contacts, one number
    ]:
        Contact.objects.create(
            tenant=cast.tenant_a, phonebook=source, name=name, kana=kana, number=number
        )
    client = login(cast.admin_a)
    exported = client.get(reverse("phone:phonebook_export", args=[source.pk])).content
    assert b"'=HYPERLINK" in exported and b"'+81312345678" in exported  # defused

    def contents(book):
        return sorted(Contact.objects.filter(phonebook=book).values_list("name", "kana", "number"))

    assert 'data-testid="import-done"' in import_file(client, copy, exported)
    assert contents(copy) == contents(source)
    # Into the book it came from: every row finds its own contact, nothing added or changed.
    ids = sorted(Contact.objects.filter(phonebook=source).values_list("pk", flat=True))
    before = contents(source)
    report = phonebook.import_contacts(source, exported.decode("utf-8-sig"))
    assert (report.created, report.updated, report.errors) == (0, 0, [])
    assert contents(source) == before
    assert sorted(Contact.objects.filter(phonebook=source).values_list("pk", flat=True)) == ids


def test_it_updates_the_contact_with_the_number_and_adds_the_rest(cast, books, login):
    book = books["alice"]
    kept = Contact.objects.create(tenant=cast.tenant_a, phonebook=book, name="旧", number="0311")
    report = phonebook.import_contacts(book, "名前,電話番号\n新,03-11\n別,0322\n")
    assert (report.created, report.updated, report.errors) == (1, 1, [])
    kept.refresh_from_db()
    assert kept.name == "新"
    assert Contact.objects.get(phonebook=book, number="0322").number_normalized == "0322"


@pytest.mark.django_db(transaction=True)  # the import runs in the worker's threads
def test_it_writes_history_and_logs_in_while_a_large_import_runs(cast, books, login):
    """The import holds no lock while it reads and checks the file, and writes in one short
    transaction: a call's history row and a login go through meanwhile (on SQLite too, where
    the old import held the write lock for minutes and history failed "database is locked")."""
    from django.test import Client

    from phone import actions
    from phone.models import CallRecord
    from portal.celery import app

    rows = "".join(f"顧客{i},コキャク,03{i:08d}\n" for i in range(20_000))
    client = login(cast.admin_a)
    body = import_file(client, books["a"], ("名前,カナ,電話番号\n" + rows).encode())
    task = app.AsyncResult(re.search(r'hx-get="[^"]+/import/([^/"]+)/"', body).group(1))
    during = {"history": 0, "login": 0}
    other = Client()
    n = 0
    while not task.ready():
        n += 1
        record_id = actions.do_open_call(
            cast.alice.pk, "sipworker-test",
            {"direction": "in", "remote_number": "0312345678",
             "started_at": timezone.now(), "sip_call_id": f"during-{n}@test"},
        )  # fmt: skip
        actions.do_close_call(cast.alice.pk, record_id, {"ended_at": timezone.now()})
        logged_in = other.post(reverse("login"), {"username": "bob", "password": cast.password})
        assert logged_in.status_code == 302
        other.logout()
        if not task.ready():
            during["history"] += 1
            during["login"] += 1
    assert task.successful() and task.result["created"] == 20_000, task.result
    assert Contact.objects.filter(phonebook=books["a"]).count() == 20_000 + 3
    assert CallRecord.objects.filter(sip_call_id__startswith="during-", worker="").count() == n
    assert during["history"] >= 1 and during["login"] >= 1, during
