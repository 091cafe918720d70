"""The 履歴 panel's query (seed 4): a user's own calls, filtered, sorted, paged."""

from dataclasses import dataclass

from django.db.models import F, Q, QuerySet

from phone.models import CallRecord
from phone.text import search_terms

# Column key in the URL → ORM ordering (seed 4-3: every column sorts both ways). Each ordering
# has a matching index on CallRecord, so a page is an index scan whatever the history's size.
SORTS = {
    "type": ("direction", "started_at"),
    "remote": ("remote_name", "remote_number"),
    "answered": ("talk_seconds",),
    "time": ("started_at",),
}
DEFAULT_SORT = "-time"
FILTERS = {choice.value for choice in CallRecord.Direction}


def parse_sort(value: str | None) -> tuple[str, bool]:
    """('time', True) for '-time'; unknown keys fall back to newest first."""
    value = value or DEFAULT_SORT
    descending = value.startswith("-")
    key = value.lstrip("-")
    if key not in SORTS:
        return "time", True
    return key, descending


def user_history(user, *, direction: str = "", query: str = "", sort: str = "") -> QuerySet:
    records = CallRecord.objects.filter(user=user)
    if direction in FILTERS:
        records = records.filter(direction=direction)
    text, katakana, digits = search_terms(query)
    if text:
        match = Q(remote_name__icontains=text)
        if katakana != text:
            match |= Q(remote_name__icontains=katakana)
        if digits:
            match |= Q(remote_number_normalized__contains=digits)
        records = records.filter(match)
    key, descending = parse_sort(sort)
    if key == "answered":
        # Unanswered calls (no talk time) count as the shortest: last when longest come first.
        talk = F("talk_seconds")
        ordering = [talk.desc(nulls_last=True)] if descending else [talk.asc(nulls_first=True)]
    else:
        ordering = [F(f).desc() if descending else F(f).asc() for f in SORTS[key]]
    # The id breaks ties so that paging is stable.
    return records.order_by(*ordering, "-id" if descending else "id")


@dataclass
class Page:
    """A page without COUNT(*): counting a heavy user's 200 000 calls costs more than showing
    them, and the seed's history shows no total either. One extra row tells whether more follow.
    """

    number: int
    object_list: list
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_other_pages(self) -> bool:
        return self.has_previous or self.has_next

    def next_page_number(self) -> int:
        return self.number + 1

    def previous_page_number(self) -> int:
        return self.number - 1

    def __iter__(self):
        return iter(self.object_list)


def page_of(queryset: QuerySet, number: str | int | None, size: int) -> Page:
    try:
        page = max(1, int(number or 1))
    except (TypeError, ValueError):
        page = 1
    page = min(page, 10_000)  # bounds the OFFSET; nobody pages past 500 000 rows by hand
    offset = (page - 1) * size
    rows = list(queryset[offset : offset + size + 1])
    return Page(number=page, object_list=rows[:size], has_next=len(rows) > size)
