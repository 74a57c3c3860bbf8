"""App config of the model registry. Nothing heavy happens here (no model loads)."""

from django.apps import AppConfig


class ModelsApiConfig(AppConfig):
    name = "models_api"
    verbose_name = "Model registry"

    def ready(self) -> None:
        from models_api import signals  # noqa: F401  (connects the unload-on-change hooks)
