"""`manage.py create_api_key NAME`: make an API key and print it, once."""

from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from access.keys import create_api_key


class Command(BaseCommand):
    help = "Create an API key and print it (only its hash is stored: it cannot be shown again)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="who uses the key (unique; shown in the access log)")
        parser.add_argument("--models", default="", help="comma-separated model ids it may use (default: all)")
        parser.add_argument("--rpm", type=int, help="requests per minute (default: RATE_LIMIT_RPM)")
        parser.add_argument("--tpm", type=int, help="tokens per minute (default: RATE_LIMIT_TPM)")
        parser.add_argument("--expires-days", type=float, help="expire after this many days (default: never)")
        parser.add_argument("--tokens-per-day", type=int, help="token quota per UTC day (default: none)")
        parser.add_argument("--tokens-per-month", type=int, help="token quota per calendar month, UTC (default: none)")
        parser.add_argument("--admin", action="store_true",
                            help="an admin key: may also read every key's usage (/v1/organization/usage/...)")

    def handle(self, *args, name: str, models: str, rpm, tpm, expires_days, tokens_per_day, tokens_per_month,
               admin: bool, **options):
        for flag, value in (("--rpm", rpm), ("--tpm", tpm), ("--expires-days", expires_days)):
            if value is not None and value < 0:
                raise CommandError(f"{flag} must not be negative.")
        for flag, value in (("--tokens-per-day", tokens_per_day), ("--tokens-per-month", tokens_per_month)):
            if value is not None and value < 1:
                raise CommandError(f"{flag} must be at least 1 (leave it out for no quota).")
        fields = {
            "allowed_models": [m.strip() for m in models.split(",") if m.strip()],
            "requests_per_minute": rpm,
            "tokens_per_minute": tpm,
            "tokens_per_day": tokens_per_day,
            "tokens_per_month": tokens_per_month,
            "admin": admin,
            "expires_at": timezone.now() + timedelta(days=expires_days) if expires_days is not None else None,
        }
        from models_api.models import ModelEntry

        known = set(ModelEntry.objects.filter(model_id__in=fields["allowed_models"]).values_list("model_id", flat=True))
        unknown = [m for m in fields["allowed_models"] if m not in known]
        if unknown:
            raise CommandError(f"Unknown model id(s): {', '.join(unknown)}.")
        try:
            row, key = create_api_key(name=name, **fields)
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from None
        self.stderr.write(f"Created API key '{row.name}'. Copy it now; it will not be shown again:")
        self.stdout.write(key)
