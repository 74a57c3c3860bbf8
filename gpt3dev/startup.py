"""What the server does once when it starts: import the registry file, check the
allow-list, say whether the API is open, and preload models if asked.

Called from the ASGI/WSGI entry points, never from AppConfig.ready(), so that
`migrate`, `check` and the tests start without touching models.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError

logger = logging.getLogger("gpt3dev.startup")


def run_startup() -> None:
    from models_api.registry_file import (
        RegistryFileError,
        check_allow_list,
        import_registry,
        read_registry_file,
    )

    conf = settings.GPT3DEV
    try:
        if conf["MODEL_REGISTRY_PATH"]:
            report = import_registry(read_registry_file(conf["MODEL_REGISTRY_PATH"]))
            logger.info("Imported %s: %s", conf["MODEL_REGISTRY_PATH"], report.summary())
        if conf["MODEL_ALLOW_LIST"]:
            check_allow_list(conf["MODEL_ALLOW_LIST"])
    except RegistryFileError as exc:
        raise ImproperlyConfigured(str(exc)) from None
    except DatabaseError as exc:
        raise ImproperlyConfigured(
            f"The database is not ready ({exc}); run `python manage.py migrate` first."
        ) from None
    if conf["PRELOAD_MODELS"]:
        threading.Thread(target=_preload, args=(conf["PRELOAD_MODELS"],), daemon=True).start()


def _preload(model_ids: list[str]) -> None:
    from models_api.engine import get_engine
    from models_api.models import ModelEntry
    from models_api.selectors import served_entries, spec_from_entry

    engine = get_engine()
    queryset = served_entries()
    if model_ids != ["all"]:
        queryset = queryset.filter(model_id__in=model_ids)
    for entry in queryset:
        spec = spec_from_entry(entry)
        try:
            if entry.task == ModelEntry.Task.EMBEDDINGS:
                engine.embedder(spec)
            else:
                engine.generator(spec)
            logger.info("Preloaded %s", entry.model_id)
        except Exception as exc:  # a model that cannot load must not stop the server
            logger.warning("Could not preload %s: %s", entry.model_id, exc)
