"""API keys (only a hash is stored) and the per-minute rate-limit counters."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class APIKey(models.Model):
    """One client's key. The key itself is shown once, when it is created."""

    name = models.CharField(max_length=128, unique=True, help_text="Who uses this key; shown in the access log.")
    prefix = models.CharField(max_length=24, editable=False, help_text="The key's first characters, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True, editable=False)
    revoked = models.BooleanField(default=False, db_index=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    allowed_models = models.JSONField(
        default=list,
        blank=True,
        help_text='A JSON list of model ids this key may use, e.g. ["SmolLM2-135M-Instruct"]; empty: every served model.',
    )
    requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: RATE_LIMIT_RPM (0 there: unlimited)."
    )
    tokens_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: RATE_LIMIT_TPM (0 there: unlimited)."
    )

    class Meta:
        ordering = ["name"]
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def __str__(self) -> str:
        return self.name

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if not isinstance(self.allowed_models, list) or not all(isinstance(m, str) for m in self.allowed_models):
            raise ValidationError({"allowed_models": "Give a JSON list of model ids."})


class RateLimitWindow(models.Model):
    """Requests and tokens one key used in one fixed minute, shared by every process."""

    bucket = models.CharField(max_length=160, help_text="db:<key id> or env:<key name>")
    window = models.BigIntegerField(help_text="Unix time // 60")
    requests = models.PositiveIntegerField(default=0)
    tokens = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["bucket", "window"], name="access_one_row_per_bucket_window")]
        verbose_name = "rate-limit window"
