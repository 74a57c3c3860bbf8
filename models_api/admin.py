"""The registry's admin: edit models live; changes apply on the next API request."""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from models_api.engine import engine_if_started
from models_api.models import ModelEntry
from upstream.credentials import encrypt_key
from upstream.pool import probe


# Fields of a trust_remote_code row only a superuser may change (as the flag itself).
REMOTE_CODE_GUARDED = ("source_type", "source", "revision", "enabled")


def _loaded_ids() -> set[str]:
    engine = engine_if_started()
    return set(engine.loaded_models()) if engine is not None else set()


class LoadedFilter(admin.SimpleListFilter):
    """Whether this server process holds the model in memory right now."""

    title = "loaded in memory"
    parameter_name = "loaded"

    def lookups(self, request, model_admin):
        return [("yes", "Loaded"), ("no", "Not loaded")]

    def queryset(self, request, queryset):
        loaded = _loaded_ids()
        if self.value() == "yes":
            return queryset.filter(model_id__in=loaded)
        if self.value() == "no":
            return queryset.exclude(model_id__in=loaded)
        return queryset


class ModelEntryForm(forms.ModelForm):
    """The row's fields, plus a write-only box for an upstream's API key: the stored key is
    encrypted and never rendered back into the page."""

    api_key = forms.CharField(
        label="upstream API key",
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Upstream only. Write-only: leave empty to keep the stored key. Stored encrypted "
        "(with a key derived from SECRET_KEY), never shown, never logged.",
    )
    clear_api_key = forms.BooleanField(label="remove the stored upstream API key", required=False)

    class Meta:
        model = ModelEntry
        fields = "__all__"

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("clear_api_key"):
            self.instance.upstream_api_key = ""
        elif cleaned.get("api_key"):
            self.instance.upstream_api_key = encrypt_key(cleaned["api_key"])
        return cleaned


@admin.register(ModelEntry)
class ModelEntryAdmin(admin.ModelAdmin):
    form = ModelEntryForm
    list_display = ("model_id", "task", "is_chat", "enabled", "loaded", "source_type", "source", "dtype", "device", "origin", "updated", "try_in_playground")
    list_display_links = ("model_id",)
    list_filter = ("task", "enabled", LoadedFilter, "is_chat", "source_type", "origin")
    list_editable = ("enabled",)
    search_fields = ("model_id", "source", "description", "owned_by", "notes")
    readonly_fields = ("origin", "created", "updated", "upstream_key_status")
    ordering = ("model_id",)
    actions = ("enable_models", "disable_models", "unload_models", "test_connection")
    save_on_top = True
    fieldsets = (
        (None, {"fields": ("model_id", "enabled", "task", "is_chat", "owned_by")}),
        ("Weights", {"fields": ("source_type", "source", "revision", "trust_remote_code")}),
        ("Runtime", {"fields": ("dtype", "device", "max_context_tokens", "chat_template", "input_token_encoding")}),
        (
            "Upstream servers (source type 'upstream')",
            {
                "fields": ("upstream_model", "api_key", "upstream_key_status", "clear_api_key", "upstream_timeout",
                           "upstream_max_concurrency"),
            },
        ),
        (
            "Description",
            {
                "classes": ("collapse",),
                "fields": (
                    "description",
                    "parameter_count",
                    "training_data",
                    "training_tokens",
                    "training_steps",
                    "evaluation",
                    "notes",
                    "source_links",
                ),
            },
        ),
        ("History", {"classes": ("collapse",), "fields": ("origin", "created", "updated")}),
    )

    @admin.display(boolean=True, description="loaded")
    def loaded(self, obj: ModelEntry) -> bool:
        return obj.model_id in _loaded_ids()

    @admin.display(description="stored upstream API key")
    def upstream_key_status(self, obj: ModelEntry) -> str:
        return "stored (encrypted)" if obj.upstream_api_key else "none"

    @admin.display(description="playground")
    def try_in_playground(self, obj: ModelEntry) -> str:
        if obj.task != ModelEntry.Task.TEXT_GENERATION or not settings.GPT3DEV.get("PLAYGROUND_ENABLED", True):
            return ""
        url = f"{reverse('playground')}?{urlencode({'model': obj.model_id})}"
        return format_html('<a class="playground-link" href="{}">Try in playground</a>', url)

    def get_readonly_fields(self, request: HttpRequest, obj: ModelEntry | None = None):
        fields = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            fields.append("trust_remote_code")  # running a model's own code is a superuser's call
            if obj is not None and obj.trust_remote_code:
                # Repointing or enabling a remote-code row would run that repository's code.
                fields.extend(REMOTE_CODE_GUARDED)
        return fields

    def save_model(self, request: HttpRequest, obj: ModelEntry, form, change: bool) -> None:
        if not request.user.is_superuser:
            if obj.trust_remote_code and "trust_remote_code" in form.changed_data:
                raise PermissionDenied("Only a superuser may turn on trust_remote_code.")
            if obj.trust_remote_code and set(REMOTE_CODE_GUARDED) & set(form.changed_data):
                raise PermissionDenied(
                    "Only a superuser may change the source, revision or enabled state of a trust_remote_code model."
                )
        super().save_model(request, obj, form, change)

    @admin.action(description="Enable the selected models")
    def enable_models(self, request: HttpRequest, queryset: QuerySet[ModelEntry]) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable the selected models (and unload them)")
    def disable_models(self, request: HttpRequest, queryset: QuerySet[ModelEntry]) -> None:
        self._set_enabled(request, queryset, False)

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[ModelEntry], enabled: bool) -> None:
        count = 0
        skipped = []
        for entry in queryset:  # save() per row so the unload signal runs
            if entry.trust_remote_code and not request.user.is_superuser:
                skipped.append(entry.model_id)
                continue
            if entry.enabled != enabled:
                entry.enabled = enabled
                entry.save(update_fields=["enabled", "updated"])
                count += 1
        state = "enabled" if enabled else "disabled"
        self.message_user(request, f"{count} model(s) {state}.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request, f"Only a superuser may change trust_remote_code models: {', '.join(skipped)}.", messages.ERROR
            )

    @admin.action(description="Unload the selected models from memory (this process)")
    def unload_models(self, request: HttpRequest, queryset: QuerySet[ModelEntry]) -> None:
        engine = engine_if_started()
        unloaded = [e.model_id for e in queryset if engine is not None and engine.unload(e.model_id)]
        self.message_user(request, f"Unloaded: {', '.join(unloaded) or 'none were loaded'}.", messages.INFO)

    @admin.action(description="Test connection to the selected upstream models")
    def test_connection(self, request: HttpRequest, queryset: QuerySet[ModelEntry]) -> None:
        for entry in queryset:
            if not entry.is_upstream:
                self.message_user(request, f"{entry.model_id}: not an upstream model.", messages.WARNING)
                continue
            for url in entry.upstream_urls():
                ok, what = probe(entry, url)
                self.message_user(request, f"{entry.model_id} at {url}: {what}", messages.SUCCESS if ok else messages.ERROR)
