"""Click-to-dial API keys: `bp_<prefix>_<secret>`; only a SHA-256 of the key is stored."""

import hashlib
import hmac
import secrets

from django.utils import timezone

from cti.models import ApiToken


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_token(tenant, name: str) -> tuple[ApiToken, str]:
    prefix = secrets.token_hex(4)
    key = f"bp_{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken.objects.create(tenant=tenant, name=name, prefix=prefix, key_hash=_hash(key))
    return token, key


def authenticate(authorization: str) -> ApiToken | None:
    """The active token named by an `Authorization: Bearer <key>` header, else None."""
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.startswith("bp_"):
        return None
    parts = key.split("_")
    if len(parts) < 3:
        return None
    token = ApiToken.objects.filter(prefix=parts[1], active=True).select_related("tenant").first()
    if token is None or not hmac.compare_digest(token.key_hash, _hash(key.strip())):
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token
