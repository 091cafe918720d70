"""The 履歴 panel (seed 4): htmx fragment or plain page, and CSV export."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET

from phone.forms import search_query
from phone.history import parse_sort, user_history
from phone.models import CallRecord
from phone.paging import page_of
from phone.resources import CallRecordResource, csv_response, export_csv
from portal.access import get_profile

PAGE_SIZE = 50
# The seed's columns (4-1), in order; keys are those of phone.history.SORTS.
COLUMNS = [
    ("type", _("Type")),
    ("remote", _("Number / name")),
    ("answered", _("Called number / answered by (talk time)")),
    ("time", _("Time")),
]


def _params(request):
    # Unknown types and sorts fall back to all / newest first (phone.history); search text that
    # is too long is a 400.
    return {
        "direction": request.GET.get("type", ""),
        "query": search_query(request.GET),
        "sort": request.GET.get("sort", ""),
    }


@login_required
@require_GET
def history(request):
    get_profile(request.user)  # users without a tenant have no phone and no history
    params = _params(request)
    records = user_history(request.user, **params)
    page = page_of(records, request.GET.get("page"), PAGE_SIZE)
    key, descending = parse_sort(params["sort"])
    headers = []
    for column, label in COLUMNS:
        state = ("desc" if descending else "asc") if column == key else ""
        # Clicking the sorted column flips it; another column starts descending (newest,
        # longest, Z first), as the seed's ▲▼ toggles do.
        flip = column if state == "desc" else f"-{column}"
        headers.append({"key": column, "label": label, "state": state, "sort": flip})
    context = {
        **params,
        "page": page,
        "records": page.object_list,
        "headers": headers,
        "directions": CallRecord.Direction.choices,
    }
    template = "phone/history.html#panel" if request.htmx else "phone/history.html"
    return render(request, template, context)


@login_required
@require_GET
def history_export(request):
    get_profile(request.user)
    records = user_history(request.user, **_params(request))
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    return csv_response(export_csv(CallRecordResource(), records), f"history-{stamp}.csv")
