from django import template

from phone.numbers import display_number

register = template.Library()


@register.filter
def hms(seconds):
    """Talk time as the seed's history shows it: 00:00:02."""
    if seconds is None:
        return ""
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@register.filter
def phone_display(number, region=None):
    """A number grouped as people read it: 03-1234-5678, 090-1234-5678, +1 415-555-0100.

    For reading only: links, data-number attributes and forms keep the number as dialled."""
    return display_number(str(number or ""), region)
