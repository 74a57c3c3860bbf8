"""The API keys' admin: create a key (shown once), revoke, set expiry, models, limits,
token quotas and the admin flag; each key's page shows its usage this day and month
(from the usage ledger) against its quotas."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from access import quotas
from access.keys import Principal, generate_key, set_key
from access.models import APIKey
from ledger import queries, recorder


class ModelIdsField(forms.CharField):
    """A list of model ids typed as text, one per line or comma-separated."""

    def prepare_value(self, value):
        if isinstance(value, list):
            return ", ".join(value)
        return value

    def to_python(self, value) -> list[str]:
        text = super().to_python(value) or ""
        return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


class APIKeyForm(forms.ModelForm):
    allowed_models = ModelIdsField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Model ids this key may use, comma-separated; empty: every served model.",
    )

    class Meta:
        model = APIKey
        fields = "__all__"

    def clean_allowed_models(self) -> list[str]:
        from models_api.models import ModelEntry

        ids = self.cleaned_data["allowed_models"]
        known = set(ModelEntry.objects.filter(model_id__in=ids).values_list("model_id", flat=True))
        unknown = [model_id for model_id in ids if model_id not in known]
        if unknown:
            raise forms.ValidationError(f"Unknown model id(s): {', '.join(unknown)}.")
        return ids


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    form = APIKeyForm
    list_display = (
        "name", "prefix", "active", "admin", "revoked", "expires_at", "requests_per_minute", "tokens_per_minute",
        "tokens_per_day", "tokens_per_month", "created", "last_used",
    )
    list_filter = ("revoked", "admin")
    search_fields = ("name", "prefix")
    readonly_fields = ("prefix", "created", "last_used", "usage")
    ordering = ("name",)
    actions = ("revoke_keys",)
    fieldsets = (
        (None, {"fields": ("name", "revoked", "expires_at", "admin")}),
        ("What it may use", {"fields": ("allowed_models", "requests_per_minute", "tokens_per_minute")}),
        ("Token quotas", {"fields": ("tokens_per_day", "tokens_per_month", "usage")}),
        ("History", {"fields": ("prefix", "created", "last_used")}),
    )

    @admin.display(description="usage")
    def usage(self, obj: APIKey) -> str:
        """This UTC day's and month's usage (the ledger) against the key's quotas (their
        counters also hold the tokens reserved by requests still running)."""
        if obj.pk is None:
            return "-"
        recorder.flush_before_reading()
        moment = quotas.now()
        counted = quotas.used_now(_principal(obj))
        rows = []
        for kind, label in (("day", "Today (UTC)"), ("month", "This month (UTC)")):
            total = queries.totals(key_id=f"db:{obj.pk}", start=_period_start(kind, moment))
            if kind in counted:
                used, limit, resets = counted[kind]
                quota = (f"{used} of its {limit}-token quota counted ({max(0, limit - used)} left); "
                         f"resets {resets:%Y-%m-%d %H:%M} UTC")
            else:
                quota = "no quota"
            rows.append((label, total.tokens, total.requests, total.input_tokens, total.output_tokens, quota))
        return format_html(
            '<table class="key-usage"><thead><tr><th>Period</th><th>Tokens</th><th>Requests</th><th>Input</th>'
            "<th>Output</th><th>Quota</th></tr></thead><tbody>{}</tbody></table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )

    @admin.display(boolean=True, description="active")
    def active(self, obj: APIKey) -> bool:
        return not obj.revoked and not obj.is_expired

    def save_model(self, request: HttpRequest, obj: APIKey, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key = generate_key()
        set_key(obj, key)
        super().save_model(request, obj, form, change)
        # The only time anyone sees the key: only its hash is stored.
        self.message_user(
            request,
            f"The API key for '{obj.name}' is {key} — copy it now: it is not stored and will not be shown again.",
            messages.WARNING,
        )

    @admin.action(description="Revoke the selected keys")
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        count = queryset.filter(revoked=False).update(revoked=True)
        self.message_user(request, f"{count} key(s) revoked.", messages.SUCCESS)


def _principal(row: APIKey) -> Principal:
    return Principal(name=row.name, bucket=f"db:{row.pk}", tokens_per_day=row.tokens_per_day or 0,
                     tokens_per_month=row.tokens_per_month or 0)


def _period_start(kind: str, moment) -> int:
    if kind == "day":
        return int(moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp())
    return int(moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp())
