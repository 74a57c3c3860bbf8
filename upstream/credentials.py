"""The upstream API key of a registry row, kept encrypted in the database.

The key is encrypted with Fernet (AES-128-CBC with an HMAC, from ``cryptography``) under
a key derived from ``SECRET_KEY`` by HKDF-SHA256, so a database dump alone does not
reveal it. Changing ``SECRET_KEY`` makes stored keys unreadable: the forwarder then
answers 503 saying the key must be entered again. The plain key exists only in memory,
in the ``Authorization`` header sent to the upstream; it is never shown in the admin,
never returned by the API and never logged.
"""

from __future__ import annotations

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

_INFO = b"gpt3dev upstream api key v1"


class UnreadableKey(ValueError):
    """The stored key was encrypted under another SECRET_KEY (or was tampered with)."""


@functools.lru_cache(maxsize=4)
def _fernet(secret_key: str) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt_key(plain: str) -> str:
    """The stored form of an upstream key ('' for no key)."""
    if not plain:
        return ""
    return _fernet(settings.SECRET_KEY).encrypt(plain.encode()).decode("ascii")


def decrypt_key(stored: str) -> str:
    """The plain upstream key ('' for none); UnreadableKey if SECRET_KEY changed."""
    if not stored:
        return ""
    try:
        return _fernet(settings.SECRET_KEY).decrypt(stored.encode("ascii")).decode()
    except (InvalidToken, ValueError):
        raise UnreadableKey(
            "The upstream API key stored for this model cannot be decrypted (SECRET_KEY changed?): "
            "enter it again in the admin."
        ) from None
