"""Free a model's memory in this process as soon as its row is disabled, changed or deleted.

Other server processes see the change on their next request: the selector no longer
serves a disabled row, and the engine reloads a model whose spec changed.
"""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from models_api.models import ModelEntry


@receiver(post_save, sender=ModelEntry)
@receiver(post_delete, sender=ModelEntry)
def unload_changed_model(sender, instance: ModelEntry, **kwargs) -> None:
    from models_api.engine import engine_if_started

    engine = engine_if_started()
    if engine is None:
        return
    if kwargs.get("signal") is post_delete or not instance.enabled:
        engine.unload(instance.model_id)
