"""The 履歴 panel's query (seed 4): a user's own calls, filtered, sorted, paged."""

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
    # A row is open while its call goes on (written at the start so no crash loses it).
    records = CallRecord.objects.filter(user=user, worker="")
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
