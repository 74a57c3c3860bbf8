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
from models_api.sampling import describe, seed_sampling_defaults
from upstream.credentials import encrypt_key
from upstream.pool import probe

# Fields of a trust_remote_code row only a superuser may change (as the flag itself).
REMOTE_CODE_GUARDED = ("source_type", "source", "revision", "enabled")
# Fields of an upstream row only a superuser may change (with its key): where requests go.
UPSTREAM_GUARDED = ("source_type", "source")


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

    # Set per request by the admin (get_form): upstream URLs and keys are a superuser's.
    may_change_upstream = True
    key_dropped = False  # the save removed the stored key (the servers changed)

    class Meta:
        model = ModelEntry
        fields = "__all__"

    def clean(self):
        cleaned = super().clean()
        if not self.may_change_upstream:
            self._refuse_upstream_changes(cleaned)
        # self.instance still holds the saved row here (the form's values reach it after clean)
        if cleaned.get("clear_api_key"):
            self.instance.upstream_api_key = ""
        elif cleaned.get("api_key"):
            self.instance.upstream_api_key = encrypt_key(cleaned["api_key"])
        elif self.instance.upstream_api_key and self._repointed(cleaned):
            # The key was entered for the servers it was saved with: whoever points the
            # row elsewhere must give the new servers their key, or it would go with them.
            self.instance.upstream_api_key = ""
            self.key_dropped = True
        return cleaned

    def _repointed(self, cleaned: dict) -> bool:
        """The save changes the row's source type, servers or upstream model name."""
        saved = self.instance
        source_type = cleaned.get("source_type", saved.source_type)
        urls = set(ModelEntry(source=cleaned.get("source", saved.source)).upstream_urls())
        return (source_type != saved.source_type or urls != set(saved.upstream_urls())
                or cleaned.get("upstream_model", saved.upstream_model) != saved.upstream_model)

    def _refuse_upstream_changes(self, cleaned: dict) -> None:
        saved = self.instance
        message = "Only a superuser may set the upstream servers or the upstream API key of a model."
        if cleaned.get("api_key") or cleaned.get("clear_api_key"):
            self.add_error(None, message)
        source_type = cleaned.get("source_type", saved.source_type)
        if source_type == ModelEntry.SourceType.UPSTREAM and not (saved.pk and saved.is_upstream):
            self.add_error("source_type" if "source_type" in self.fields else None, message)


@admin.register(ModelEntry)
class ModelEntryAdmin(admin.ModelAdmin):
    form = ModelEntryForm
    list_display = ("model_id", "task", "is_chat", "enabled", "loaded", "source_type", "source", "dtype", "device",
                    "origin", "updated", "try_in_playground")
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
            "Sampling defaults (text generation)",
            {
                "description": (
                    "What a request that leaves a field out gets: the request's own value first, then the value "
                    "here, then OpenAI's default (temperature: 0 in a request is still greedy). Empty: OpenAI's "
                    "default. A new row is filled from its model's generation_config.json where that file is "
                    "on this machine. Changes apply to the next request, with no restart; "
                    "MODEL_SAMPLING_DEFAULTS=0 turns them all off. GET /v1/models/{id} shows the ones in force."
                ),
                "fields": (
                    ("default_temperature", "default_top_p"),
                    ("default_top_k", "default_min_p"),
                    "default_repetition_penalty",
                    ("default_presence_penalty", "default_frequency_penalty"),
                    "default_max_tokens",
                    "default_stop",
                ),
            },
        ),
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
            if obj is not None and obj.is_upstream:
                # Repointing an upstream row would send its stored key (and requests) elsewhere.
                fields.extend(f for f in UPSTREAM_GUARDED if f not in fields)
        return fields

    def get_fieldsets(self, request: HttpRequest, obj: ModelEntry | None = None):
        fieldsets = super().get_fieldsets(request, obj)
        if request.user.is_superuser:
            return fieldsets
        hidden = {"api_key", "clear_api_key"}  # keys are a superuser's to enter
        return [(name, {**options, "fields": tuple(f for f in options["fields"] if f not in hidden)})
                for name, options in fieldsets]

    def get_form(self, request: HttpRequest, obj: ModelEntry | None = None, change: bool = False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)  # a new class per call
        form.may_change_upstream = request.user.is_superuser
        return form

    def save_model(self, request: HttpRequest, obj: ModelEntry, form, change: bool) -> None:
        if not request.user.is_superuser:
            if obj.trust_remote_code and "trust_remote_code" in form.changed_data:
                raise PermissionDenied("Only a superuser may turn on trust_remote_code.")
            if obj.trust_remote_code and set(REMOTE_CODE_GUARDED) & set(form.changed_data):
                raise PermissionDenied(
                    "Only a superuser may change the source, revision or enabled state of a trust_remote_code model."
                )
            if obj.is_upstream and (not change or set(UPSTREAM_GUARDED) & set(form.changed_data)):
                raise PermissionDenied("Only a superuser may set the upstream servers of a model.")
        seeded = {} if change else seed_sampling_defaults(obj)
        super().save_model(request, obj, form, change)
        if getattr(form, "key_dropped", False):
            self.message_user(request, f"{obj.model_id}: its servers or upstream model name changed, so the stored "
                              "upstream API key was removed; enter the key for the new servers.", messages.WARNING)
        if seeded:
            note = f"Sampling defaults from the model's generation_config.json: {describe(seeded)}."
            self.message_user(request, note, messages.INFO)

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
                level = messages.SUCCESS if ok else messages.ERROR
                self.message_user(request, f"{entry.model_id} at {url}: {what}", level)
