"""Screen-pop (seed 5-2) and the built-in CRM pages: customers, 電話受付, 名簿."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods

from cti.access import get_customer_for_user
from cti.crm import search_customers, search_directory
from cti.forms import CustomerForm, CustomerPhoneFormSet, ReceptionForm
from cti.lookup import caller_info, expand_url, settings_for
from cti.models import CtiSettings, Customer, Reception
from phone.forms import search_query
from phone.models import CallRecord
from portal.access import get_active_sip_account, get_profile, scoped
from portal.urlsafety import safe_http_url

PAGE_SIZE = 50


def _builtin_links(info, call_id):
    reception = (
        reverse("cti:reception_new")
        + "?"
        + urlencode({"number": info.number, "call_id": call_id, "customer": info.customer_id or ""})
    )
    if info.customer_id:
        customers = reverse("cti:customer_edit", args=[info.customer_id])
    else:
        customers = reverse("cti:customers") + "?" + urlencode({"q": info.number})
    directory = reverse("cti:directory") + "?" + urlencode({"q": info.number})
    return {"customers": customers, "reception": reception, "directory": directory}


def popup_links(user, info, settings: CtiSettings, call_id: str) -> dict:
    """The three buttons' targets: built-in pages, or the configured external URLs."""
    links = _builtin_links(info, call_id)
    if settings.target == CtiSettings.Target.BUILTIN:
        return links
    account = get_active_sip_account(user)
    extension = account.extension if account else ""

    def expand(template):
        # Checked again here, not only when saved: a row written around validation (an old
        # row, a raw update) must never put javascript: or data: into a button.
        return safe_http_url(expand_url(template, info=info, call_id=call_id, extension=extension))

    external = {
        "customers": expand(settings.customer_list_url) if settings.customer_list_url else "",
        "reception": expand(settings.reception_url) if settings.reception_url else "",
        "directory": expand(settings.directory_url) if settings.use_directory_url else "",
    }
    return {key: external[key] or links[key] for key in links}


@login_required
@require_GET
def popup(request):
    """The 着信情報 panel for one call; the phone page fetches it on ring or on answer."""
    get_profile(request.user)
    number = request.GET.get("number", "")[:64]
    called = request.GET.get("called", "")[:64]
    call_id = request.GET.get("call_id", "")[:255]
    settings = settings_for(request.user)
    phase = request.GET.get("phase", "")
    if phase and (not settings.enabled or settings.show_on != phase):
        # Not the moment this user wants the popup (seed 5-1 ②): nothing to show.
        return HttpResponse(status=204)
    info = caller_info(request.user, number, called, call_id)
    links = popup_links(request.user, info, settings, call_id)
    # An external target opens by itself when the popup shows on ring (seed 5-2 ⑧).
    auto_open = ""
    if settings.target != CtiSettings.Target.BUILTIN and settings.show_on == "ring":
        auto_open = links["reception"] if settings.reception_url else links["customers"]
    context = {
        "info": info,
        "links": links,
        "settings": settings,
        "external": settings.target != CtiSettings.Target.BUILTIN,
        "auto_open": auto_open,
    }
    return render(request, "cti/popup.html", context)


def _search_page(request, search, template):
    """A searchable, paged list of the user's tenant's CRM rows."""
    profile = get_profile(request.user)
    query = search_query(request.GET)
    page = Paginator(search(profile.tenant_id, query), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, template, {"query": query, "page": page})


@login_required
@require_GET
def customers(request):
    return _search_page(request, search_customers, "cti/customers.html")


@login_required
@require_http_methods(["GET", "POST"])
def customer_edit(request, pk=None):
    profile = get_profile(request.user)
    customer = get_customer_for_user(request.user, pk) if pk else Customer(tenant=profile.tenant)
    data = request.POST if request.method == "POST" else None
    form = CustomerForm(data, instance=customer, tenant=profile.tenant)
    phones = CustomerPhoneFormSet(data, instance=customer, prefix="phones")
    if data is not None and form.is_valid() and phones.is_valid():
        with transaction.atomic():
            customer = form.save()
            for phone in phones.save(commit=False):
                phone.tenant = profile.tenant
                phone.customer = customer
                phone.save()
            for phone in phones.deleted_objects:
                phone.delete()
        return redirect("cti:customer_edit", pk=customer.pk)
    receptions = customer.receptions.select_related("taken_by__profile")[:20] if pk else []
    return render(
        request,
        "cti/customer_edit.html",
        {"customer": customer, "form": form, "phones": phones, "receptions": receptions},
    )


@login_required
@require_GET
def directory(request):
    return _search_page(request, search_directory, "cti/directory.html")


@login_required
@require_GET
def receptions(request):
    records = scoped(Reception, request.user).select_related("customer", "taken_by__profile")
    page = Paginator(records, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "cti/receptions.html", {"page": page})


def _positive_int(value) -> int | None:
    """An id from a query parameter; None for anything else (str.isdigit() also accepts "²")."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if 0 < number < 2**63 else None


@login_required
@require_http_methods(["GET", "POST"])
def reception_new(request):
    """電話受付: a memo prefilled with the caller, linked to the customer and to the call."""
    profile = get_profile(request.user)
    call_id = (request.POST.get("call_id") or request.GET.get("call_id") or "")[:255]
    if request.method == "POST":
        form = ReceptionForm(request.POST, tenant=profile.tenant)
        if form.is_valid():
            reception = form.save(commit=False)
            reception.tenant = profile.tenant
            reception.taken_by = request.user
            if call_id:
                reception.call_record = (
                    scoped(CallRecord, request.user).filter(sip_call_id=call_id).first()
                )
            reception.save()
            return redirect("cti:receptions")
    else:
        number = request.GET.get("number", "")[:64]
        customer_id = _positive_int(request.GET.get("customer"))
        if customer_id is None and number:
            info = caller_info(request.user, number)
            customer_id = info.customer_id
        customer = (
            scoped(Customer, request.user).filter(pk=customer_id).first() if customer_id else None
        )
        form = ReceptionForm(
            initial={"caller_number": number, "customer": customer}, tenant=profile.tenant
        )
    return render(request, "cti/reception_form.html", {"form": form, "call_id": call_id})
