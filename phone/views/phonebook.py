"""The 電話帳 panel (seed 2-5, 3-2): htmx fragments, each also reachable as a plain page."""

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from phone import presence
from phone.access import (
    can_edit_phonebook,
    get_contact_for_user,
    get_phonebook_for_user,
    personal_phonebook,
    visible_phonebooks,
)
from phone.forms import ContactForm, ImportForm, search_query
from phone.models import Contact
from phone.paging import page_of
from phone.phonebook import (
    MAX_UPLOAD_BYTES,
    ImportRefused,
    ImportReport,
    decode_csv,
    export_contacts,
    import_contacts,
    search_contacts,
)
from phone.resources import csv_response
from phone.tasks import import_contacts_task

PAGE_SIZE = 100
# Imports up to this many lines finish within the request (tens of milliseconds, the write one
# short transaction); larger ones go to Celery, whose worker is a thread of this process in the
# embedded default (portal.background).
SYNC_IMPORT_MAX_ROWS = 300
SESSION_IMPORTS = "phonebook_imports"


class CsvUploadForm(ImportForm):
    """The import's upload as the bytes sent: phone.phonebook.decode_csv reads UTF-8, UTF-16
    and Shift_JIS and names the line it cannot read."""

    MAX_BYTES = MAX_UPLOAD_BYTES

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > self.MAX_BYTES:
            raise forms.ValidationError(
                _("The file is too large (%(max)d MB at most).")
                % {"max": self.MAX_BYTES // (1024 * 1024)}
            )
        return upload.read()


def _template(request, partial):
    return f"phone/phonebook.html#{partial}" if request.htmx else "phone/phonebook.html"


def _book_from(request):
    book_id = request.GET.get("book") or request.POST.get("book")
    if book_id:
        return get_phonebook_for_user(request.user, book_id)
    return personal_phonebook(request.user)


def _editable_book(request, book_id):
    book = get_phonebook_for_user(request.user, book_id)
    if not can_edit_phonebook(request.user, book):
        raise PermissionDenied
    return book


def _panel_context(request, book, **extra):
    query = search_query(request.GET)
    page = page_of(search_contacts(book, query), request.GET.get("page"), PAGE_SIZE)
    personal_phonebook(request.user)  # make sure the user's own book is in the list
    return {
        "book": book,
        "books": visible_phonebooks(request.user).order_by("-owner_id", "name"),
        "query": query,
        "page": page,
        "contacts": page.object_list,
        "editable": can_edit_phonebook(request.user, book),
        "import_form": CsvUploadForm(),
        # Colleagues' extensions get a presence lamp (static/phone/presence.js lights it).
        "presence_extensions": presence.lamp_extensions(request.user),
        **extra,
    }


@login_required
@require_GET
def phonebook(request):
    book = _book_from(request)
    return render(request, _template(request, "panel"), _panel_context(request, book))


def _contact_form(request, book, instance, action):
    """Shared by add and edit: the row form, or the saved row (htmx) / the panel (plain)."""
    form = ContactForm(request.POST or None, instance=instance)
    if request.method == "POST" and form.is_valid():
        contact = form.save()
        if not request.htmx:
            return redirect(f"{reverse('phone:phonebook')}?book={book.pk}")
        return render(
            request,
            "phone/phonebook.html#row",
            {
                "contact": contact,
                "editable": True,
                "presence_extensions": presence.lamp_extensions(request.user),
            },
        )
    context = {"form": form, "book": book, "action": action}
    if instance.pk:
        context["contact"] = instance
    return render(request, "phone/phonebook.html#row_form", context)


@login_required
@require_http_methods(["GET", "POST"])
def contact_new(request, book_id):
    book = _editable_book(request, book_id)
    contact = Contact(phonebook=book, tenant=book.tenant)
    return _contact_form(request, book, contact, reverse("phone:contact_new", args=[book.pk]))


@login_required
@require_http_methods(["GET", "POST"])
def contact_edit(request, pk):
    contact = get_contact_for_user(request.user, pk)
    if not can_edit_phonebook(request.user, contact.phonebook):
        raise PermissionDenied
    action = reverse("phone:contact_edit", args=[contact.pk])
    return _contact_form(request, contact.phonebook, contact, action)


@login_required
@require_GET
def contact_row(request, pk):
    """The read-only row again (an edit cancelled)."""
    contact = get_contact_for_user(request.user, pk)
    editable = can_edit_phonebook(request.user, contact.phonebook)
    return render(
        request,
        "phone/phonebook.html#row",
        {
            "contact": contact,
            "editable": editable,
            "presence_extensions": presence.lamp_extensions(request.user),
        },
    )


@login_required
@require_POST
def contact_delete(request, pk):
    contact = get_contact_for_user(request.user, pk)
    if not can_edit_phonebook(request.user, contact.phonebook):
        raise PermissionDenied
    book_id = contact.phonebook_id
    contact.delete()
    if not request.htmx:
        return redirect(f"{reverse('phone:phonebook')}?book={book_id}")
    return HttpResponse("")


@login_required
@require_GET
def phonebook_export(request, book_id):
    book = get_phonebook_for_user(request.user, book_id)
    return csv_response(export_contacts(book), f"phonebook-{book.pk}.csv")


@login_required
@require_POST
def phonebook_import(request, book_id):
    book = _editable_book(request, book_id)
    form = CsvUploadForm(request.POST, request.FILES)
    context = {"book": book, "import_form": form}
    if form.is_valid():
        try:
            text = decode_csv(form.cleaned_data["file"])
        except ImportRefused as refused:
            context["report"] = ImportReport(errors=refused.errors)
            return render(request, "phone/phonebook.html#import_status", context)
        if text.count("\n") <= SYNC_IMPORT_MAX_ROWS:
            context["report"] = import_contacts(book, text)
        else:
            task = import_contacts_task.delay(book.pk, text)
            # Only the session that started an import may read its progress.
            request.session[SESSION_IMPORTS] = [
                *request.session.get(SESSION_IMPORTS, [])[-9:],
                task.id,
            ]
            context["task_id"] = task.id
    return render(request, "phone/phonebook.html#import_status", context)


@login_required
@require_GET
def phonebook_import_progress(request, book_id, task_id):
    from celery_progress.backend import Progress

    from portal.celery import app

    book = get_phonebook_for_user(request.user, book_id)
    if task_id not in request.session.get(SESSION_IMPORTS, []):
        raise PermissionDenied
    info = Progress(app.AsyncResult(task_id)).get_info()
    context = {"book": book, "task_id": task_id, "progress": info.get("progress") or {}}
    if info.get("complete"):
        if info.get("success"):
            context["report"] = ImportReport.from_dict(info["result"])
        else:
            context["report"] = ImportReport(errors=[(0, [str(info.get("result"))])])
        context["task_id"] = None
    return render(request, "phone/phonebook.html#import_status", context)
