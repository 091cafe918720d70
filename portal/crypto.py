"""Encryption at rest for secrets we must be able to read back (SIP passwords).

Fernet (from `cryptography`) gives authenticated encryption; MultiFernet lets an operator rotate
keys: the first key of SIP_PASSWORD_KEY encrypts, every listed key decrypts.
"""

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@cache
def _fernet() -> MultiFernet:
    keys = list(settings.SIP_PASSWORD_KEYS)
    if not keys:
        # Development only (settings refuse to start without a key when DEBUG is off).
        digest = hashlib.sha256(("sip-password:" + settings.SECRET_KEY).encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(
            "SIP_PASSWORD_KEY must be Fernet keys (Fernet.generate_key())"
        ) from exc


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode("ascii")


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode("ascii")).decode()
    except InvalidToken as exc:
        raise ValueError("stored secret cannot be decrypted with the configured keys") from exc
