from django import template

register = template.Library()


@register.filter
def hms(seconds):
    """Talk time as the seed's history shows it: 00:00:02."""
    if seconds is None:
        return ""
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
