"""Delete stored responses past the retention (RESPONSES_RETENTION_DAYS) and the oldest
over the row cap (RESPONSES_MAX_STORED); ``--days``/``--keep`` override both for one run."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from responses import store


class Command(BaseCommand):
    help = "Delete stored /v1/responses past the retention period and over the row cap."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int,
                            help="Keep responses this many days (default: RESPONSES_RETENTION_DAYS).")
        parser.add_argument("--keep", type=int, help="Keep at most this many rows (default: RESPONSES_MAX_STORED).")

    def handle(self, *args, days: int | None = None, keep: int | None = None, **options) -> None:
        expired, over = store.purge(days=days, keep=keep)
        self.stdout.write(f"Deleted {expired} expired and {over} over-cap stored responses.")
