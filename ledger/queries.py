"""Reading the ledger: sums per time bucket (the Usage API), per day (the admin page) and
per key over a period (the key's admin page). Every sum is computed by the database."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import F, Max, Sum
from django.db.models.functions import Mod

from ledger.models import UsageRow

# The routes each Usage API endpoint reports (the Responses API is completions usage).
COMPLETIONS_ENDPOINTS = ("completions", "chat-completions", "responses")
EMBEDDINGS_ENDPOINTS = ("embeddings",)
SUMS = ("requests", "input_tokens", "cached_tokens", "output_tokens", "errors_4xx", "errors_5xx", "cancelled")


def bucketed(
    *,
    start: int,
    end: int,
    width: int,
    endpoints: Iterable[str] | None = None,
    key_ids: Iterable[str] | None = None,
    models: Iterable[str] | None = None,
    group_by: Iterable[str] = (),
) -> dict[int, list[dict]]:
    """``{bucket start: [sums per group]}`` for the rows with ``start <= hour < end``;
    buckets are ``width`` seconds, aligned to UTC (``hour - hour % width``)."""
    rows = UsageRow.objects.filter(hour__gte=start, hour__lt=end)
    if endpoints is not None:
        rows = rows.filter(endpoint__in=list(endpoints))
    if key_ids:
        rows = rows.filter(key_id__in=list(key_ids))
    if models:
        rows = rows.filter(model__in=list(models))
    groups = list(group_by)
    sums = {name: Sum(name) for name in SUMS}
    out: dict[int, list[dict]] = {}
    query = (
        rows.annotate(bucket=F("hour") - Mod(F("hour"), width))
        .values("bucket", *groups)
        .annotate(**sums)
        .order_by("bucket", *groups)
    )
    for item in query:
        out.setdefault(int(item.pop("bucket")), []).append(item)
    return out


def key_names(key_ids: Iterable[str], *, since: int = 0) -> dict[str, str]:
    """The last name each key was used under (in the rows from ``since`` on)."""
    rows = (UsageRow.objects.filter(key_id__in=list(key_ids), hour__gte=since).exclude(key_name="")
            .values("key_id").annotate(last=Max("hour")))
    latest = {(row["key_id"], row["last"]) for row in rows}
    named = UsageRow.objects.filter(key_id__in=[key_id for key_id, _ in latest],
                                    hour__in={hour for _, hour in latest}).exclude(key_name="")
    return {key_id: name for key_id, hour, name in named.values_list("key_id", "hour", "key_name")
            if (key_id, hour) in latest}


@dataclass
class Totals:
    requests: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    cancelled: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def totals(*, key_id: str | None = None, start: int, end: int | None = None) -> Totals:
    """Sums over every row from ``start`` (unix time, rounded down to its hour) on."""
    rows = UsageRow.objects.filter(hour__gte=start - start % 3600)
    if end is not None:
        rows = rows.filter(hour__lt=end)
    if key_id is not None:
        rows = rows.filter(key_id=key_id)
    found = rows.aggregate(**{name: Sum(name) for name in SUMS})
    return Totals(**{name: int(value or 0) for name, value in found.items()})
