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


def check_keys(keys: list[str]) -> list[Fernet]:
    """Fernet objects for SIP_PASSWORD_KEY's keys, or ImproperlyConfigured naming the bad one.

    Called at start-up (PortalConfig.ready): a mistyped key would otherwise surface only when the
    first SIP password is saved or read, as a failed registration.  The message never repeats
    the key itself: it is a secret and start-up errors end up in logs.
    """
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError) as exc:
            raise ImproperlyConfigured(
                f"SIP_PASSWORD_KEY: key {position} of {len(keys)} is not a Fernet key (32 bytes, "
                'URL-safe base64, 44 characters). Generate one with: python -c "from '
                'cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
            ) from exc
    return fernets


@cache
def _fernet() -> MultiFernet:
    keys = list(settings.SIP_PASSWORD_KEYS)
    if not keys:
        # Development only (settings refuse to start without a key when DEBUG is off).
        digest = hashlib.sha256(("sip-password:" + settings.SECRET_KEY).encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    return MultiFernet(check_keys(keys))


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode("ascii")


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode("ascii")).decode()
    except InvalidToken as exc:
        raise ValueError("stored secret cannot be decrypted with the configured keys") from exc
