"""What the server does once when it starts: import the registry file, check the
allow-list, say whether the API is open, and preload models if asked.

Called from the ASGI/WSGI entry points, never from AppConfig.ready(), so that
`migrate`, `check` and the tests start without touching models.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError

logger = logging.getLogger("gpt3dev.startup")


def run_startup() -> None:
    """Run the start-up work; uvicorn's ``--workers`` processes import the application
    inside their event loop, where Django refuses database work: then on a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _run_startup()
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpt3dev-startup") as pool:
        pool.submit(_in_thread, _run_startup).result()


def _in_thread(work) -> None:
    from django.db import connections

    try:
        work()
    finally:
        connections.close_all()


def _run_startup() -> None:
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
        announce_access_mode()
        from responses.store import fail_interrupted

        fail_interrupted()  # background responses whose process is gone: failed, not in_progress forever
    except RegistryFileError as exc:
        raise ImproperlyConfigured(str(exc)) from None
    except DatabaseError as exc:
        raise ImproperlyConfigured(
            f"The database is not ready ({exc}); run `python manage.py migrate` first."
        ) from None
    if conf["PRELOAD_MODELS"]:
        threading.Thread(target=_preload, args=(conf["PRELOAD_MODELS"],), daemon=True).start()


OPEN_SERVER_WARNING = (
    "\n" + "!" * 78 + "\n"
    "!! NO API KEY IS CONFIGURED: /v1/ IS OPEN TO ANYONE WHO CAN REACH THIS SERVER.\n"
    "!! Create keys with `python manage.py create_api_key NAME` or in the admin, or set\n"
    "!! API_KEYS=name:key,... (REQUIRE_API_KEY=1 refuses every request until one exists).\n"
    + "!" * 78
)


def announce_access_mode() -> None:
    """Say loudly when the API is open; otherwise say how keys are configured."""
    from access.keys import auth_required
    from access.models import APIKey

    conf = settings.GPT3DEV
    if not auth_required():
        logger.warning(OPEN_SERVER_WARNING)
        return
    keys = APIKey.objects.filter(revoked=False).count()
    logger.info(
        "API keys required on /v1/: %d in the database, %d from API_KEYS.", keys, len(conf["API_KEYS"])
    )


def _preload(model_ids: list[str]) -> None:
    from models_api.engine import load_model
    from models_api.models import ModelEntry
    from models_api.selectors import served_entries

    queryset = served_entries().exclude(source_type=ModelEntry.SourceType.UPSTREAM)  # nothing to load here
    if model_ids != ["all"]:
        queryset = queryset.filter(model_id__in=model_ids)
    for entry in queryset:
        try:
            load_model(entry)
            logger.info("Preloaded %s", entry.model_id)
        except Exception as exc:  # a model that cannot load must not stop the server
            logger.warning("Could not preload %s: %s", entry.model_id, exc)
