"""TURN credentials for the phone page (TURN REST API, draft-uberti-behave-turn-rest-00, as
coturn's `use-auth-secret` checks them).

The page never sees TURN_SECRET: it gets a username "<expiry unix time>:<user id>" and the
password base64(HMAC-SHA1(TURN_SECRET, username)), valid until the expiry (TURN_TTL seconds
from now). coturn recomputes the HMAC with the same secret and refuses an expired username.
The page asks `ice-servers` again before each new peer connection, so a page left open longer
than TURN_TTL still gets working credentials.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


def turn_credentials(
    user: str | int, *, secret: str, ttl: int, now: float | None = None
) -> tuple[str, str]:
    """(username, password) valid for `ttl` seconds from `now`."""
    expiry = int(time.time() if now is None else now) + ttl
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def browser_ice_servers(user: Any, *, now: float | None = None) -> list[dict[str, Any]]:
    """RTCIceServer dictionaries for `user`'s RTCPeerConnection: the STUN/TURN URLs of
    ICE_SERVERS as they are, and TURN_URLS with fresh credentials."""
    servers: list[dict[str, Any]] = []
    if settings.ICE_SERVERS:
        servers.append({"urls": list(settings.ICE_SERVERS)})
    if settings.TURN_URLS and settings.TURN_SECRET:
        username, credential = turn_credentials(
            user.pk, secret=settings.TURN_SECRET, ttl=settings.TURN_TTL, now=now
        )
        servers.append(
            {"urls": list(settings.TURN_URLS), "username": username, "credential": credential}
        )
    return servers


def page_ice_config(user: Any) -> dict[str, Any]:
    """What the phone page carries in its "ice-servers" json_script: the servers, and where to
    get fresh credentials before the next peer connection (only with TURN: nothing expires
    otherwise)."""
    config: dict[str, Any] = {"iceServers": browser_ice_servers(user)}
    if settings.TURN_URLS:
        config["refresh"] = reverse("ice-servers")
    return config


@never_cache
@require_GET
@login_required
def ice_servers_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"iceServers": browser_ice_servers(request.user)})
