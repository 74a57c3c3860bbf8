"""The usage ledger: who used what, per hour, key, model and endpoint."""

from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "ledger"
    verbose_name = "Usage ledger"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from core import usage
        from ledger.recorder import record

        # Batched (the default), recording a request is a sum in memory: no thread hop.
        # Written at each request's end (USAGE_FLUSH_SECONDS=0), it queries the database:
        # then async code runs it on a thread, never on the event loop.
        usage.subscribe(record, database=not settings.GPT3DEV["USAGE_FLUSH_SECONDS"])
