"""The 履歴 panel: the user's own calls, filtered, sorted both ways, paged, exported."""

import csv
import io
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from phone.models import CallRecord
from phone.views import history as views_history

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def calls(cast):
    base = timezone.now().replace(microsecond=0) - timedelta(days=1)

    def record(user, minutes, direction, number, name="", talk=None, called=""):
        started = base + timedelta(minutes=minutes)
        answered = started + timedelta(seconds=3) if talk is not None else None
        return CallRecord.objects.create(
            tenant=user.profile.tenant, user=user, direction=direction, remote_number=number,
            remote_name=name, called_number=called, started_at=started, answered_at=answered,
            ended_at=(answered or started) + timedelta(seconds=talk or 9),
        )  # fmt: skip

    return {
        "out": record(cast.alice, 1, "out", "9220", "オフィス太郎", talk=2),
        "missed": record(
            cast.alice, 2, "missed", "090-4411-0011", "株式会社テスト", called="0359890925"
        ),
        "in": record(cast.alice, 3, "in", "09044110011", "株式会社テスト", talk=17),
        "rejected": record(cast.alice, 4, "rejected", "0120111222"),
        "bob": record(cast.bob, 5, "out", "1111", "ボブの相手", talk=1),
        "charlie": record(cast.charlie, 6, "out", "2222", "チャーリーの相手", talk=1),
    }  # fmt: skip


def listed(client, **params):
    response = client.get(reverse("phone:history"), params)
    assert response.status_code == 200
    return [record.pk for record in response.context["records"]]


def test_it_lists_only_the_users_own_calls_newest_first(cast, calls, login):
    ids = listed(login(cast.alice))
    assert ids == [calls[k].pk for k in ("rejected", "in", "missed", "out")]
    assert listed(login(cast.charlie)) == [calls["charlie"].pk]


def test_it_shows_the_seed_columns_in_the_fragment(cast, calls, login):
    html = login(cast.alice).get(reverse("phone:history"), **HTMX).content.decode()
    assert "<html" not in html
    assert html.count('data-testid="history-row"') == 4
    assert "00:00:17" in html  # talk time
    assert "キャンセル" in html  # a missed call has no talk time
    assert "株式会社テスト" in html and "0359890925" in html
    assert 'data-number="9220"' in html and "オフィス太郎に発信しますか?" in html


@pytest.mark.parametrize(
    ("kind", "expected"), [("out", ["out"]), ("in", ["in"]), ("missed", ["missed"]),
                           ("rejected", ["rejected"]), ("", ["rejected", "in", "missed", "out"])]
)  # fmt: skip
def test_it_filters_by_type(cast, calls, login, kind, expected):
    assert listed(login(cast.alice), type=kind) == [calls[k].pk for k in expected]


@pytest.mark.parametrize(
    ("query", "expected"),
    [("テスト", ["in", "missed"]), ("4411-0011", ["in", "missed"]), ("おふぃす", ["out"]),
     ("0120 111", ["rejected"]), ("ボブ", []), ("2222", [])],
)  # fmt: skip
def test_it_filters_by_number_or_name(cast, calls, login, query, expected):
    assert listed(login(cast.alice), q=query) == [calls[k].pk for k in expected]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("time", ["out", "missed", "in", "rejected"]),
        ("-time", ["rejected", "in", "missed", "out"]),
        ("-answered", ["in", "out", "rejected", "missed"]),  # longest talk first, unanswered last
        ("type", ["in", "missed", "out", "rejected"]),  # by the stored code
        ("remote", ["rejected", "out", "missed", "in"]),  # empty names first
        ("bogus", ["rejected", "in", "missed", "out"]),
    ],
)
def test_it_sorts_by_any_column_both_ways(cast, calls, login, sort, expected):
    assert listed(login(cast.alice), sort=sort) == [calls[k].pk for k in expected]


def test_it_flips_the_sorted_column_on_a_second_click(cast, calls, login):
    html = login(cast.alice).get(reverse("phone:history"), {"sort": "-time"}).content.decode()
    link = re.search(r'href="([^"]+)"[^>]*data-testid="history-sort-time"', html).group(1)
    assert link.endswith("sort=time")
    other = re.search(r'href="([^"]+)"[^>]*data-testid="history-sort-type"', html).group(1)
    assert other.endswith("sort=-type")


def test_it_pages_long_histories(cast, calls, login, monkeypatch):
    monkeypatch.setattr(views_history, "PAGE_SIZE", 3)
    client = login(cast.alice)
    assert len(listed(client)) == 3
    assert listed(client, page=2) == [calls["out"].pk]
    assert listed(client, page=99) == []  # past the end: an empty page
    assert listed(client, page="junk") == listed(client)


def test_it_exports_the_filtered_history_as_csv(cast, calls, login):
    response = login(cast.alice).get(reverse("phone:history_export"), {"type": "in"})
    assert response["Content-Type"].startswith("text/csv")
    # UTF-8 with a BOM, which Excel on Japanese Windows needs to read it as UTF-8.
    assert response.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert len(rows) == 1
    assert rows[0]["種別"] == "着信" and rows[0]["通話時間(秒)"] == "17"
    everything = login(cast.alice).get(reverse("phone:history_export")).content.decode()
    assert "キャンセル" in everything and "ボブの相手" not in everything


def test_it_defuses_formulas_from_callers_in_the_export(cast, calls, login):
    # The caller chooses the name a PBX passes on (display name): it must not run in Excel.
    hostile = ["=cmd|' /C calc'!A0", "+1+1", "-1+1", "@SUM(1)", "\t=1", "\r=1"]
    for i, name in enumerate(hostile):
        CallRecord.objects.create(
            tenant=cast.tenant_a, user=cast.alice, direction="in", remote_number=f"+8131{i}",
            remote_name=name, started_at=timezone.now(),
        )  # fmt: skip
    response = login(cast.alice).get(reverse("phone:history_export"), {"sort": "time"})
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"), newline="")))
    assert [row["名称"] for row in rows[-len(hostile) :]] == ["'" + name for name in hostile]
    assert rows[-1]["相手番号"] == "'+81315"  # + starts a formula too
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row.values())


def test_it_refuses_history_to_anonymous_and_tenantless_users(cast, client, login):
    assert client.get(reverse("phone:history")).status_code == 302
    assert login(cast.superuser).get(reverse("phone:history")).status_code == 403
    assert login(cast.superuser).get(reverse("phone:history_export")).status_code == 403
