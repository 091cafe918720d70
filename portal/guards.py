"""Request-level guards that hold for every view, the admin and the login included."""

from django.http import HttpResponse, HttpResponseBadRequest
from django.utils.deprecation import MiddlewareMixin

NUL = "\x00"
# Longer than any link the portal makes (a 200-character search in Japanese, percent-encoded,
# is under 2 KB) and the size nginx accepts for a request line by default.
MAX_QUERY_STRING_BYTES = 8192


def _has_nul(mapping) -> bool:
    return any(NUL in key or any(NUL in value for value in values if isinstance(value, str))
               for key, values in mapping.lists())  # fmt: skip


class RequestGuardMiddleware(MiddlewareMixin):
    """Refuse requests that only an attacker or a broken client sends, before a view sees them.

    - A NUL character (`%00`) anywhere in the path, the query, a form field or a cookie: 400.
      PostgreSQL refuses NUL in text, so one that reaches a query (a search box, the admin's
      search, the login name django-axes records) turns a harmless request into a 500.  No real
      input contains NUL; refusing the request is simpler and safer than stripping it per view.
    - A query string over MAX_QUERY_STRING_BYTES: 414.  The admin's search turns every word into
      conditions; thousands of words make a query the database may refuse or take long over.
    """

    def process_request(self, request):
        if len(request.META.get("QUERY_STRING", "")) > MAX_QUERY_STRING_BYTES:
            return HttpResponse("The address is too long.", status=414, content_type="text/plain")
        if NUL in request.path_info or _has_nul(request.GET):
            return HttpResponseBadRequest("NUL characters are not allowed.")
        if any(NUL in key or NUL in value for key, value in request.COOKIES.items()):
            return HttpResponseBadRequest("NUL characters are not allowed.")
        # Only form bodies are parsed here (request.POST is empty for JSON, which views read).
        if request.method == "POST" and _has_nul(request.POST):
            return HttpResponseBadRequest("NUL characters are not allowed.")
        return None
