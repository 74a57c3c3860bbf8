"""A read-only admin for stored responses: look them up, and delete them (one by one or
in bulk); nothing can be edited, since a stored response is a record of what was said."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from responses.models import StoredResponse


@admin.register(StoredResponse)
class StoredResponseAdmin(admin.ModelAdmin):
    list_display = ("id", "owner_name", "model", "status", "background", "created_at")
    list_filter = ("status", "background", "model")
    search_fields = ("id", "owner", "owner_name", "previous_response_id")
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in StoredResponse._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
