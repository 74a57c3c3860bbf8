"""Token quotas per key: tokens per UTC day and per calendar month (UTC).

A quota is counted like the tokens-per-minute limit (:mod:`access.ratelimit`), in the
same shared table, one row per key and period (bucket ``day:db:7`` or ``month:db:7``):
a key whose period is used up is refused at admission; a request reserves its prompt
plus ``max_tokens`` (an embeddings request its input) before any work, with one
conditional ``UPDATE ... WHERE tokens <= limit - reservation``, so two processes can
never both take the last tokens; when the answer ends the reservation is replaced by
the tokens it really used (:attr:`core.usage.Usage.charged_tokens`), charged to the
period the answer ended in.

Over quota is OpenAI's 429 ``insufficient_quota`` (type and code), whose message says
when the quota resets; it carries ``x-should-retry: false`` so that OpenAI's clients do
not retry it. Answers of a key with a quota carry ``x-ratelimit-limit-tokens-day``,
``x-ratelimit-remaining-tokens-day`` and ``x-ratelimit-reset-tokens-day`` (``-month``
likewise).

"Now" is read through :func:`now`, which tests replace to move to the next day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db.models import F

from access.keys import Principal
from access.models import RateLimitWindow
from core.errors import APIError

KEEP_PERIODS = 3  # older rows of a key's quota are deleted when it opens a new period
LABELS = {"day": "daily", "month": "monthly"}


def now() -> datetime:
    """The current time (UTC); the one clock of the quotas."""
    return datetime.now(UTC)


def period_of(kind: str, at: datetime) -> tuple[int, datetime]:
    """The window number of the period holding ``at`` and when that period ends."""
    if kind == "day":
        start = datetime(at.year, at.month, at.day, tzinfo=UTC)
        return (start - datetime(1970, 1, 1, tzinfo=UTC)).days, start + timedelta(days=1)
    year, month = (at.year + 1, 1) if at.month == 12 else (at.year, at.month + 1)
    return at.year * 12 + at.month - 1, datetime(year, month, 1, tzinfo=UTC)


@dataclass
class Period:
    kind: str  # "day" or "month"
    limit: int
    window: int
    resets: datetime
    used: int = 0  # tokens used and held in the period, as last read
    reserved: int = 0  # tokens this request holds in ``window``

    def bucket(self, principal: Principal) -> str:
        return f"{self.kind}:{principal.bucket}"


@dataclass
class QuotaState:
    """A request's quotas: what it holds in each period, and its headers."""

    principal: Principal
    periods: list[Period] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        moment = now()
        for period in self.periods:
            out[f"x-ratelimit-limit-tokens-{period.kind}"] = str(period.limit)
            out[f"x-ratelimit-remaining-tokens-{period.kind}"] = str(max(0, period.limit - period.used))
            out[f"x-ratelimit-reset-tokens-{period.kind}"] = duration((period.resets - moment).total_seconds())
        return out

    def exceeded(self, period: Period, requested: int = 0, *, param: str | None = None) -> APIError:
        label = LABELS[period.kind]
        asked = f", Requested {requested}" if requested else ""
        wait = duration((period.resets - now()).total_seconds())
        return APIError(
            429,
            f"You exceeded the {label} token quota of key '{self.principal.name}': Limit {period.limit}, "
            f"Used {period.used}{asked}. The quota resets at {period.resets:%Y-%m-%d %H:%M} UTC (in {wait}).",
            param=param,
            code="insufficient_quota",
            type="insufficient_quota",
            headers={"x-should-retry": "false", **self.headers()},
        )


def quota_periods(principal: Principal) -> list[Period]:
    moment = now()
    periods = []
    for kind, limit in (("day", principal.tokens_per_day), ("month", principal.tokens_per_month)):
        if limit:
            window, resets = period_of(kind, moment)
            periods.append(Period(kind, limit, window, resets))
    return periods


def admit(principal: Principal) -> QuotaState | None:
    """The key's quota state, or the 429 when a period is already used up (None: the key
    has no quota). Synchronous."""
    periods = quota_periods(principal)
    if not periods:
        return None
    state = QuotaState(principal, periods)
    for period in periods:
        period.used = _used(period.bucket(principal), period.window)
    for period in periods:
        if period.used >= period.limit:
            raise state.exceeded(period)
    return state


def reserve(state: QuotaState, tokens: int, *, param: str | None = None) -> None:
    """Hold ``tokens`` of every period for this request, or raise the 429 (what was held
    in an earlier period stays held until the request is settled)."""
    if tokens <= 0:
        return
    for period in state.periods:
        bucket = period.bucket(state.principal)
        RateLimitWindow.ensure(bucket, period.window, KEEP_PERIODS)
        rows = RateLimitWindow.objects.filter(bucket=bucket, window=period.window)
        if not rows.filter(tokens__lte=period.limit - tokens).update(tokens=F("tokens") + tokens):
            period.used = _used(bucket, period.window)
            raise state.exceeded(period, tokens, param=param)
        period.reserved += tokens
        period.used = _used(bucket, period.window)


def settle(state: QuotaState, used: int) -> None:
    """Replace this request's reservations with the tokens it really used, charged to the
    period the answer ends in."""
    moment = now()
    for period in state.periods:
        bucket = period.bucket(state.principal)
        window, resets = period_of(period.kind, moment)
        RateLimitWindow.settle(bucket, period.window, period.reserved, window, used, KEEP_PERIODS)
        if window == period.window:
            period.used += used - period.reserved
        else:
            period.window, period.resets = window, resets
            period.used = _used(bucket, window)
        period.reserved = used


def used_now(principal: Principal) -> dict[str, tuple[int, int, datetime]]:
    """``{"day": (used, limit, resets), ...}`` for the key's quotas, as counted now."""
    return {
        period.kind: (_used(period.bucket(principal), period.window), period.limit, period.resets)
        for period in quota_periods(principal)
    }


def _used(bucket: str, window: int) -> int:
    return RateLimitWindow.objects.filter(bucket=bucket, window=window).values_list("tokens", flat=True).first() or 0


def duration(seconds: float) -> str:
    """``10h3m0s``, ``4m2s``, ``7s``: how long until a quota resets."""
    whole = max(0, int(-(-seconds // 1)))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"
