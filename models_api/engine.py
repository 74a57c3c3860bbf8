"""The process-wide inference engine, created on first use from the settings."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from django.conf import settings

from gpt3dev import metrics

if TYPE_CHECKING:  # importing the engine pulls in torch: only when first used
    from inference.engine import Engine

_engine: "Engine | None" = None
_lock = threading.Lock()


def get_engine() -> "Engine":
    global _engine
    if _engine is None:
        from inference.engine import Engine, EngineConfig

        with _lock:
            if _engine is None:
                conf = settings.GPT3DEV
                _engine = Engine(
                    EngineConfig(
                        cache_dir=conf["MODEL_CACHE_DIR"],
                        max_loaded_models=conf["MAX_LOADED_MODELS"],
                        max_batch_size=conf["MAX_BATCH_SIZE"],
                        max_queue=conf["MAX_QUEUE"],
                        kv_cache_memory=conf["KV_CACHE_MEMORY"],
                        max_step_tokens=conf["MAX_STEP_TOKENS"],
                        max_prefill_tokens=conf["MAX_PREFILL_TOKENS"],
                        max_skip_s=float(conf["ADMISSION_SKIP_SECONDS"]),
                        default_device=conf["DEFAULT_DEVICE"],
                        cpu_auto_dtype=conf["CPU_DTYPE"],
                        hf_offline=conf["HF_HUB_OFFLINE"],
                        default_context_tokens=conf["MAX_CONTEXT_TOKENS"],
                    )
                )
                metrics.set_engine_stats_source(_engine.model_stats)
    return _engine


def engine_if_started() -> "Engine | None":
    return _engine


def loaded_format(entry) -> str | None:
    """The weight format ('int8', 'int4', 'float32', ...) of the row's model as loaded in
    this process for its current settings, or None when it is not loaded here."""
    from models_api.selectors import spec_from_entry

    if _engine is None or entry.is_upstream:
        return None
    model = _engine.cached(spec_from_entry(entry))
    return None if model is None else getattr(model, "weight_format", None)


def load_model(entry):
    """The loaded engine model (a TextGenerator or an Embedder, by the row's task) for a
    registry row, loading it if needed (blocking); records the load time in metrics."""
    from models_api.models import ModelEntry
    from models_api.selectors import spec_from_entry

    engine = get_engine()
    load = engine.embedder if entry.task == ModelEntry.Task.EMBEDDINGS else engine.generator
    was_loaded = entry.model_id in engine.loaded_models()
    started = time.monotonic()
    model = load(spec_from_entry(entry))
    if not was_loaded:
        metrics.model_loaded(entry.model_id, model, time.monotonic() - started)
    return model


async def aload_model(entry):
    """:func:`load_model` for async views: a model already loaded is returned at once;
    a load runs on a fresh thread (see inference.threads), never on the event loop."""
    from gpt3dev.errors import from_engine_error
    from inference.errors import EngineError
    from inference.threads import run_in_fresh_thread
    from models_api.selectors import spec_from_entry

    model = get_engine().cached(spec_from_entry(entry))
    if model is not None:
        return model
    try:
        return await run_in_fresh_thread(load_model, entry)
    except EngineError as exc:
        raise from_engine_error(exc) from None
