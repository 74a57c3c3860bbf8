"""Per-key requests-per-minute and tokens-per-minute limits, counted in the database so
that every server process (uvicorn workers, several machines) shares them.

Windows are fixed minutes (unix time // 60), one row per key and minute. Admission is
one conditional ``UPDATE ... SET requests = requests + 1 WHERE requests < limit``, which
is atomic on SQLite and PostgreSQL alike, so two processes can never both take the last
slot.

Tokens are counted the way OpenAI does: a completion request reserves its prompt tokens
plus ``max_tokens`` for every sequence when it is admitted, an embeddings request its
input tokens (a request that could not fit is a 429 before any work; upstream rows
reserve an estimate, see :mod:`upstream.budget`). When the answer ends the reservation
is taken back from the minute it was made in and the usage the answer reported is
charged to the minute the answer ended in, so a long request counts where it used its
tokens. A key whose minute is already used up gets a 429 before it starts.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from django.db.models import F

from access import quotas
from access.keys import Principal
from access.models import RateLimitWindow
from core.errors import APIError

WINDOW_SECONDS = 60
KEEP_WINDOWS = 5  # older rows of a key are deleted when it opens a new window


@dataclass
class LimitState:
    """What the x-ratelimit-* headers of one answer say."""

    principal: Principal
    window: int
    requests: int = 0  # used in this window, this request included
    tokens: int = 0
    reserved: int = 0  # tokens this request holds in ``window``

    @property
    def reset_seconds(self) -> float:
        return max(0.0, (self.window + 1) * WINDOW_SECONDS - time.time())

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        reset = _duration(self.reset_seconds)
        rpm, tpm = self.principal.requests_per_minute, self.principal.tokens_per_minute
        if rpm:
            out["x-ratelimit-limit-requests"] = str(rpm)
            out["x-ratelimit-remaining-requests"] = str(max(0, rpm - self.requests))
            out["x-ratelimit-reset-requests"] = reset
        if tpm:
            out["x-ratelimit-limit-tokens"] = str(tpm)
            out["x-ratelimit-remaining-tokens"] = str(max(0, tpm - self.tokens))
            out["x-ratelimit-reset-tokens"] = reset
        return out

    def too_many(self, message: str) -> APIError:
        retry = max(1, math.ceil(self.reset_seconds))
        return APIError(
            429, message, code="rate_limit_exceeded", headers={"Retry-After": str(retry), **self.headers()}
        )


def current_window() -> int:
    return int(time.time() // WINDOW_SECONDS)


def admit_request(principal: Principal) -> LimitState:
    """Count one request against the key's minute, or raise the 429 that says which
    limit it hit. Synchronous: call it through ``sync_to_async`` from async code."""
    state = LimitState(principal, current_window())
    rpm, tpm = principal.requests_per_minute, principal.tokens_per_minute
    if not rpm and not tpm:
        return state
    rows = RateLimitWindow.objects.filter(bucket=principal.bucket, window=state.window)
    RateLimitWindow.ensure(principal.bucket, state.window, KEEP_WINDOWS)
    if tpm:
        used = rows.values_list("tokens", flat=True).first() or 0
        if used >= tpm:
            state.tokens = used
            state.requests = rows.values_list("requests", flat=True).first() or 0
            raise state.too_many(
                f"Rate limit reached for key '{principal.name}' on tokens per min (TPM): "
                f"Limit {tpm}, Used {used}. Please try again in {math.ceil(state.reset_seconds)}s."
            )
    admitted = rows.filter(requests__lt=rpm) if rpm else rows
    if not admitted.update(requests=F("requests") + 1):
        state.requests = rpm
        state.tokens = rows.values_list("tokens", flat=True).first() or 0
        raise state.too_many(
            f"Rate limit reached for key '{principal.name}' on requests per min (RPM): "
            f"Limit {rpm}, Used {rpm}. Please try again in {math.ceil(state.reset_seconds)}s."
        )
    state.requests, state.tokens = rows.values_list("requests", "tokens").first()
    return state


def reserve_tokens(state: LimitState, tokens: int, *, param: str | None = None) -> None:
    """Hold ``tokens`` of the key's minute for this request, or raise a 429."""
    tpm = state.principal.tokens_per_minute
    if not tpm or tokens <= 0:
        return
    if tokens > tpm:
        raise APIError(
            429,
            f"Request too large for key '{state.principal.name}' on tokens per min (TPM): "
            f"Limit {tpm}, Requested {tokens}. "
            + ("Send fewer or shorter inputs." if param == "input" else "Lower max_tokens or the prompt."),
            param=param,
            code="rate_limit_exceeded",
            headers=state.headers(),
        )
    rows = RateLimitWindow.objects.filter(bucket=state.principal.bucket, window=state.window)
    if not rows.filter(tokens__lte=tpm - tokens).update(tokens=F("tokens") + tokens):
        state.tokens = rows.values_list("tokens", flat=True).first() or 0
        raise state.too_many(
            f"Rate limit reached for key '{state.principal.name}' on tokens per min (TPM): "
            f"Limit {tpm}, Used {state.tokens}, Requested {tokens}. "
            f"Please try again in {math.ceil(state.reset_seconds)}s."
        )
    state.reserved += tokens
    state.tokens = rows.values_list("tokens", flat=True).first() or 0


def settle_tokens(state: LimitState, used: int | None) -> None:
    """Replace this request's reservation with the tokens it really used, charged to the
    minute the answer ends in (None: keep the reservation, e.g. the usage is unknown
    because the client went away)."""
    if not state.principal.tokens_per_minute or used is None:
        return
    now = current_window()
    RateLimitWindow.settle(state.principal.bucket, state.window, state.reserved, now, used, KEEP_WINDOWS)
    state.window, state.reserved = now, used


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``20ms``."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


async def areserve_tokens(request, tokens: int, *, param: str | None = None) -> None:
    """Reserve ``tokens`` for the request's API key, of its minute and of its token
    quotas (:mod:`access.quotas`); nothing on an open server or for a key with neither a
    tokens-per-minute limit nor a quota."""
    state: LimitState | None = getattr(request, "rate_limit", None)
    quota: quotas.QuotaState | None = getattr(request, "quota", None)
    per_minute = state is not None and bool(state.principal.tokens_per_minute)
    if not per_minute and quota is None:
        return
    from asgiref.sync import sync_to_async

    def reserve() -> None:
        if per_minute:
            reserve_tokens(state, tokens, param=param)
        if quota is not None:
            quotas.reserve(quota, tokens, param=param)

    await sync_to_async(reserve)()
