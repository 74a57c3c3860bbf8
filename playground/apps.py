"""App config of the playground. It holds a page and its static files, no models."""

from django.apps import AppConfig


class PlaygroundConfig(AppConfig):
    name = "playground"
    verbose_name = "Playground"
