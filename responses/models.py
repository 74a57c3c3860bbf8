"""Stored responses: one row per response made with ``store: true``.

A row keeps the whole Response object as it was answered (``body``), the request's own
input items (``input_items``, what ``GET .../input_items`` lists) and the conversation
that came before them (``context``: the items replayed from ``previous_response_id``),
so a later response can continue it even when an earlier one has been deleted. Rows
belong to the API key that made them (``owner``; empty on an open server) and live in
the database, so they survive restarts and every worker sees them.
"""

from __future__ import annotations

from django.db import models


class StoredResponse(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        IN_PROGRESS = "in_progress"
        COMPLETED = "completed"
        INCOMPLETE = "incomplete"
        FAILED = "failed"
        CANCELLED = "cancelled"

    UNFINISHED = (Status.QUEUED, Status.IN_PROGRESS)

    id = models.CharField(primary_key=True, max_length=64)
    owner = models.CharField(max_length=200, blank=True, db_index=True,
                             help_text="The API key's id (db:N or env:NAME); empty on an open server.")
    owner_name = models.CharField(max_length=200, blank=True, help_text="The API key's name when it was made.")
    model = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices)
    background = models.BooleanField(default=False)
    previous_response_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    worker = models.CharField(max_length=200, blank=True,
                              help_text="host:pid of the process generating a background response.")
    body = models.JSONField(help_text="The Response object as the API returns it.")
    input_items = models.JSONField(default=list)
    context = models.JSONField(default=list, help_text="Items replayed from previous_response_id.")

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "stored response"

    def __str__(self) -> str:
        return self.id
