"""Count-free paging for the side panels (history, phonebook)."""

from dataclasses import dataclass

from django.db.models import QuerySet


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
