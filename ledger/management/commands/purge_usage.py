"""`manage.py purge_usage`: delete ledger rows older than USAGE_RETENTION_DAYS."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ledger.recorder import purge


class Command(BaseCommand):
    help = "Delete usage-ledger rows older than USAGE_RETENTION_DAYS (or --days)."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, help="keep this many days instead of USAGE_RETENTION_DAYS")

    def handle(self, *args, days, **options):
        if days is not None and days < 1:
            raise CommandError("--days must be at least 1.")
        keep = settings.GPT3DEV["USAGE_RETENTION_DAYS"] if days is None else days
        deleted = purge(before=int(time.time()) - keep * 86400)
        self.stdout.write(f"Deleted {deleted} usage row(s) older than {keep} day(s).")
