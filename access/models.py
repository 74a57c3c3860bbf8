"""API keys (only a hash is stored) and the rate-limit and quota counters."""

from __future__ import annotations

from django.core.validators import MinValueValidator
from django.db import IntegrityError, models, transaction
from django.db.models import F
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
        help_text=(
            'A JSON list of model ids this key may use, e.g. ["SmolLM2-135M-Instruct"]; empty: every served model.'
        ),
    )
    requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: RATE_LIMIT_RPM (0 there: unlimited)."
    )
    tokens_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: RATE_LIMIT_TPM (0 there: unlimited)."
    )
    tokens_per_day = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Tokens this key may use per UTC day (prompt and answer); empty: no quota.",
    )
    tokens_per_month = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Tokens this key may use per calendar month (UTC); empty: no quota.",
    )
    admin = models.BooleanField(
        default=False, help_text="An admin key may also read the usage of every key (/v1/organization/usage/...)."
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
    """Requests and tokens one key used in one fixed window, shared by every process: a
    minute (bucket ``db:7``), a UTC day (``day:db:7``) or a month (``month:db:7``)."""

    bucket = models.CharField(max_length=160, help_text="db:<key id> or env:<key name>; day: or month: before it")
    window = models.BigIntegerField(help_text="Unix time // 60; days since 1970; months since year 0")
    requests = models.PositiveIntegerField(default=0)
    tokens = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["bucket", "window"], name="access_one_row_per_bucket_window")]
        verbose_name = "rate-limit window"

    @classmethod
    def ensure(cls, bucket: str, window: int, keep: int) -> None:
        """The counter row of ``bucket`` for ``window``; the process that opens it deletes
        the bucket's rows older than ``keep`` windows."""
        if cls.objects.filter(bucket=bucket, window=window).exists():
            return
        try:
            with transaction.atomic():
                cls.objects.create(bucket=bucket, window=window)
        except IntegrityError:  # another process opened this window first
            return
        cls.objects.filter(bucket=bucket, window__lt=window - keep).delete()

    @classmethod
    def settle(cls, bucket: str, reserved_in: int, reserved: int, window: int, used: int, keep: int) -> None:
        """Replace ``reserved`` tokens held in window ``reserved_in`` with the ``used``
        tokens of the answer, charged to ``window`` (the one it ended in): the settling of
        both the per-minute limits and the daily and monthly quotas."""
        if window == reserved_in:
            if used != reserved:
                if not reserved:  # nothing was held, so the row may not exist yet
                    cls.ensure(bucket, window, keep)
                cls.objects.filter(bucket=bucket, window=window).update(tokens=F("tokens") + (used - reserved))
            return
        if reserved:
            cls.objects.filter(bucket=bucket, window=reserved_in).update(tokens=F("tokens") - reserved)
        if used:
            cls.ensure(bucket, window, keep)
            cls.objects.filter(bucket=bucket, window=window).update(tokens=F("tokens") + used)
