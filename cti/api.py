"""Click-to-dial for CRMs: POST /cti/api/dial/ with a Bearer key makes a user's phone dial.

    curl -X POST https://phone.example.jp/cti/api/dial/ -H "Authorization: Bearer bp_..." \
         -H "Content-Type: application/json" -d '{"user": "alice", "number": "03-1234-5678"}'

The user may also be named by "extension".  The request is handed to the user's open phone
pages (the most recent one dials); 202 means it was handed over, not that the call connected.
"""

import json

from django.core.exceptions import ValidationError
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from cti.tokens import authenticate
from phone import actions
from phone.numbers import clean_number
from portal.models import Profile, SipAccount

MAX_BODY = 4096


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


@csrf_exempt  # token-authenticated, no cookies: CSRF does not apply
@require_POST
def dial(request):
    token = authenticate(request.headers.get("Authorization", ""))
    if token is None:
        response = _error(401, "unauthorized", "a valid Bearer API key is required")
        response["WWW-Authenticate"] = 'Bearer realm="browserphone"'
        return response
    if len(request.body) > MAX_BODY:
        return _error(413, "too_large", "request body too large")
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return _error(400, "bad_json", "body must be a JSON object")
    if not isinstance(data, dict):
        return _error(400, "bad_json", "body must be a JSON object")
    try:
        number = clean_number(str(data.get("number", "")))
    except ValidationError as exc:
        return _error(400, "bad_number", " ".join(str(m) for m in exc.messages))
    for key in ("user", "extension"):
        value = data.get(key)
        # A name the database can compare: PostgreSQL refuses NUL in text (a 500 otherwise).
        if value is not None and (not isinstance(value, str | int) or not _plain(str(value))):
            return _error(400, f"bad_{key}", f"{key} must be a short text")
    profile = _find_user(token.tenant_id, data)
    if profile is None:
        return _error(404, "no_such_user", "no such user in this tenant")
    actions.do_request_dial(profile.user, number, source=f"api:{token.name}")
    return JsonResponse({"status": "sent", "user": profile.user.get_username(), "number": number},
                        status=202)  # fmt: skip


def _plain(value: str) -> bool:
    return len(value) <= 150 and "\x00" not in value


def _find_user(tenant_id: int, data: dict) -> Profile | None:
    profiles = Profile.objects.filter(tenant_id=tenant_id, user__is_active=True)
    if data.get("user"):
        return profiles.filter(user__username=str(data["user"])).select_related("user").first()
    if data.get("extension"):
        account = (
            SipAccount.objects.filter(
                tenant_id=tenant_id, extension=str(data["extension"]), is_active=True
            )
            .select_related("user__profile")
            .first()
        )
        return account.user.profile if account else None
    return None
