"""The admin's usage page: tokens and requests per day for the last 30 days, by key and
by model, drawn as SVG charts by a small script of ours (ledger/static/ledger/), plus
tables of the same sums. The ledger's rows are written only by requests: the page reads
them and nothing here changes them."""

from __future__ import annotations

from datetime import UTC, datetime

from django.contrib import admin
from django.db.models import F, Sum
from django.db.models.functions import Mod
from django.http import HttpRequest
from django.template.response import TemplateResponse

from ledger import queries, recorder
from ledger.models import ANONYMOUS, UsageRow

DAY = 86400
DAYS = 30


def _day_sums(start: int, field: str) -> list[dict]:
    return list(
        UsageRow.objects.filter(hour__gte=start)
        .annotate(day=F("hour") - Mod(F("hour"), DAY))
        .values("day", field)
        .annotate(**{name: Sum(name) for name in queries.SUMS})
        .order_by("day", field)
    )


def _series(rows: list[dict], field: str, days: list[int], label) -> list[dict]:
    """One series per key or model: tokens and requests per day, biggest first."""
    index = {day: i for i, day in enumerate(days)}
    series: dict[str, dict] = {}
    for row in rows:
        item = series.setdefault(row[field], {"id": row[field], "label": label(row[field]),
                                              "tokens": [0] * len(days), "requests": [0] * len(days)})
        i = index[int(row["day"])]
        item["tokens"][i] += int(row["input_tokens"] or 0) + int(row["output_tokens"] or 0)
        item["requests"][i] += int(row["requests"] or 0)
    return sorted(series.values(), key=lambda s: (-sum(s["tokens"]), -sum(s["requests"]), s["label"]))


def _table(rows: list[dict], field: str, label) -> list[dict]:
    out: dict[str, dict] = {}
    for row in rows:
        item = out.setdefault(row[field], {"label": label(row[field]), "id": row[field],
                                           **{name: 0 for name in queries.SUMS}})
        for name in queries.SUMS:
            item[name] += int(row[name] or 0)
    for item in out.values():
        item["tokens"] = item["input_tokens"] + item["output_tokens"]
    return sorted(out.values(), key=lambda item: (-item["tokens"], -item["requests"], item["label"]))


def usage_context(moment: float | None = None) -> dict:
    """What the usage page shows, for the 30 UTC days ending today."""
    recorder.flush_before_reading()
    moment = recorder.now() if moment is None else moment
    today = int(moment // DAY) * DAY
    days = [today - DAY * back for back in range(DAYS - 1, -1, -1)]
    by_key, by_model = _day_sums(days[0], "key_id"), _day_sums(days[0], "model")
    names = queries.key_names({row["key_id"] for row in by_key}, since=days[0])

    def key_label(key_id: str) -> str:
        if key_id == ANONYMOUS:
            return "(no key)"
        return names.get(key_id) or key_id

    def model_label(model: str) -> str:
        return model or "(no model)"

    per_day = [{"day": day, "date": datetime.fromtimestamp(day, UTC).date(), "requests": 0, "tokens": 0,
                "errors": 0} for day in days]
    for row in by_key:
        item = per_day[days.index(int(row["day"]))]
        item["requests"] += int(row["requests"] or 0)
        item["tokens"] += int(row["input_tokens"] or 0) + int(row["output_tokens"] or 0)
        item["errors"] += int(row["errors_4xx"] or 0) + int(row["errors_5xx"] or 0)
    chart = {
        "days": [datetime.fromtimestamp(day, UTC).strftime("%Y-%m-%d") for day in days],
        "by_key": _series(by_key, "key_id", days, key_label),
        "by_model": _series(by_model, "model", days, model_label),
    }
    return {
        "chart": chart,
        "keys": _table(by_key, "key_id", key_label),
        "models": _table(by_model, "model", model_label),
        "per_day": list(reversed(per_day)),
        "first_day": chart["days"][0],
        "last_day": chart["days"][-1],
    }


@admin.register(UsageRow)
class UsageAdmin(admin.ModelAdmin):
    """Read-only: the changelist is the usage page."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context=None):
        context = {
            **self.admin_site.each_context(request),
            "title": "Usage: the last 30 days",
            "opts": self.model._meta,
            **usage_context(),
        }
        return TemplateResponse(request, "admin/ledger/usage.html", context)
