"""One aggregate row per (hour, API key, model, endpoint): bounded by construction, it
grows with keys x models x endpoints x hours, never with requests."""

from __future__ import annotations

from django.db import models

ANONYMOUS = "anonymous"  # the key id of requests without a key (an open server, a 401)


class UsageRow(models.Model):
    hour = models.BigIntegerField(help_text="Unix time of the UTC hour's start.")
    key_id = models.CharField(max_length=160, help_text='"db:<key id>", "env:<key name>" or "anonymous".')
    key_name = models.CharField(max_length=128, blank=True, help_text="The key's name when it was last used.")
    model = models.CharField(max_length=200, blank=True, help_text="The served model id; empty: none was reached.")
    endpoint = models.CharField(max_length=64, help_text='The route\'s name, e.g. "chat-completions".')
    requests = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0, help_text="Of input_tokens, read from the prefix cache.")
    output_tokens = models.BigIntegerField(default=0)
    errors_4xx = models.BigIntegerField(default=0, help_text="Refused requests (4xx but 499).")
    errors_5xx = models.BigIntegerField(default=0)
    cancelled = models.BigIntegerField(default=0, help_text="Requests whose client left (499); charged what they used.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["hour", "key_id", "model", "endpoint"], name="ledger_one_row_per_hour_key_model_endpoint"
            )
        ]
        verbose_name = "usage"
        verbose_name_plural = "usage"

    def __str__(self) -> str:
        return f"{self.key_name or self.key_id} {self.model or '-'} {self.endpoint} @{self.hour}"
