"""The responses app: /v1/responses, its stored responses, retention and admin."""

from django.apps import AppConfig


class ResponsesConfig(AppConfig):
    name = "responses"
    verbose_name = "Responses API"
    default_auto_field = "django.db.models.BigAutoField"
