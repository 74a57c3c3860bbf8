"""The API keys' admin: create a key (shown once), revoke, set expiry, models and limits."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from access.keys import generate_key, set_key
from access.models import APIKey


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
        "name", "prefix", "active", "revoked", "expires_at", "requests_per_minute", "tokens_per_minute",
        "created", "last_used",
    )
    list_filter = ("revoked",)
    search_fields = ("name", "prefix")
    readonly_fields = ("prefix", "created", "last_used")
    ordering = ("name",)
    actions = ("revoke_keys",)
    fieldsets = (
        (None, {"fields": ("name", "revoked", "expires_at")}),
        ("What it may use", {"fields": ("allowed_models", "requests_per_minute", "tokens_per_minute")}),
        ("History", {"fields": ("prefix", "created", "last_used")}),
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
