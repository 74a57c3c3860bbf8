"""Making, hashing and checking API keys.

Keys are long random tokens (``sk-gpt3dev-`` + 43 url-safe characters, 256 bits), so a
fast hash is right: the database stores SHA-256 of the key and a request's key is found
by its hash (an indexed lookup, no timing to learn from). Keys from the ``API_KEYS``
setting are compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from access.models import APIKey

KEY_PREFIX = "sk-gpt3dev-"
LAST_USED_PRECISION = timedelta(seconds=60)  # write last_used at most once a minute per key


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_api_key(*, name: str, **fields) -> tuple[APIKey, str]:
    """A new key row and the key itself, which is never stored and never shown again."""
    key = generate_key()
    row = APIKey(name=name, **fields)
    set_key(row, key)
    row.full_clean()
    row.save()
    return row, key


def set_key(row: APIKey, key: str) -> None:
    row.key_hash = hash_key(key)
    row.prefix = key[: len(KEY_PREFIX) + 4]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name, what it may use and its limits."""

    name: str
    bucket: str  # the rate-limit counter's id
    allowed_models: tuple[str, ...] | None = None  # None: every served model
    requests_per_minute: int = 0  # 0: unlimited
    tokens_per_minute: int = 0
    tokens_per_day: int = 0  # quotas (0: none), see access.quotas
    tokens_per_month: int = 0
    admin: bool = False  # may read every key's usage (the Usage API)


class AuthFailure(Exception):
    """Why a request is not authenticated; the message is what the client reads."""


def env_keys() -> list[tuple[str, str]]:
    """``(name, key)`` pairs of the API_KEYS setting: ``name:key`` or a bare key."""
    pairs = []
    for position, item in enumerate(settings.GPT3DEV["API_KEYS"], start=1):
        name, sep, key = item.partition(":")
        if not sep:
            name, key = f"env-key-{position}", item
        pairs.append((name.strip(), key.strip()))
    return pairs


def auth_required() -> bool:
    """Whether /v1/ needs a key: some key is configured (even a revoked one), or
    REQUIRE_API_KEY is on. Otherwise the server is open (and said so at start-up)."""
    conf = settings.GPT3DEV
    return bool(conf["REQUIRE_API_KEY"] or conf["API_KEYS"] or APIKey.objects.exists())


def authenticate(authorization: str | None) -> Principal | None:
    """The caller for an ``Authorization`` header; None when the server is open and no
    key was sent; AuthFailure when a key is needed or the one sent is not valid."""
    token = _bearer(authorization)
    if token is None:
        if not auth_required():
            return None
        raise AuthFailure(
            "You didn't provide an API key. You need to provide your API key in an Authorization "
            "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    conf = settings.GPT3DEV
    for name, key in env_keys():
        if hmac.compare_digest(token.encode(), key.encode()):
            return Principal(
                name=name,
                bucket=f"env:{name}",
                requests_per_minute=conf["RATE_LIMIT_RPM"],
                tokens_per_minute=conf["RATE_LIMIT_TPM"],
                admin=name in conf["ADMIN_KEY_NAMES"],
            )
    row = APIKey.objects.filter(key_hash=hash_key(token)).first()
    if row is None:
        if not auth_required():
            return None  # an open server ignores whatever key a client sends
        raise AuthFailure(f"Incorrect API key provided: {_masked(token)}.")
    if row.revoked:
        raise AuthFailure(f"The API key '{row.name}' has been revoked.")
    now = timezone.now()
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthFailure(f"The API key '{row.name}' expired on {row.expires_at:%Y-%m-%d %H:%M} UTC.")
    APIKey.objects.filter(pk=row.pk).filter(
        Q(last_used__isnull=True) | Q(last_used__lt=now - LAST_USED_PRECISION)
    ).update(last_used=now)
    return Principal(
        name=row.name,
        bucket=f"db:{row.pk}",
        allowed_models=tuple(row.allowed_models) if row.allowed_models else None,
        requests_per_minute=conf["RATE_LIMIT_RPM"] if row.requests_per_minute is None else row.requests_per_minute,
        tokens_per_minute=conf["RATE_LIMIT_TPM"] if row.tokens_per_minute is None else row.tokens_per_minute,
        tokens_per_day=row.tokens_per_day or 0,
        tokens_per_month=row.tokens_per_month or 0,
        admin=row.admin,
    )


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _masked(token: str) -> str:
    """OpenAI's way: enough of the key to recognise it, never the whole of it."""
    if len(token) <= 8:
        return "*" * len(token)
    return f"{token[:4]}{'*' * 8}{token[-4:]}"
