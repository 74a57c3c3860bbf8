"""The process-wide inference engine, created on first use from the settings."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING

from django.conf import settings

from observability import metrics

if TYPE_CHECKING:  # importing the engine pulls in torch: only when first used
    from inference.engine import Engine

logger = logging.getLogger("gpt3dev.models")

_engine: Engine | None = None
_lock = threading.Lock()
# Loaded models whose sampling defaults were logged: once per load, even when a preload
# and a first request ask for the same model at the same time.
_announced: weakref.WeakSet = weakref.WeakSet()


def get_engine() -> Engine:
    global _engine
    if _engine is None:
        from inference.constraints import GrammarLimits
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
                        grammar=GrammarLimits(
                            max_bytes=conf["GRAMMAR_MAX_BYTES"],
                            max_depth=conf["GRAMMAR_MAX_DEPTH"],
                            workers=conf["GRAMMAR_COMPILE_WORKERS"],
                            queue=conf["GRAMMAR_COMPILE_QUEUE"],
                            refuse_s=float(conf["GRAMMAR_REFUSE_SECONDS"]),
                            mask_budget_s=conf["GRAMMAR_MASK_BUDGET_MS"] / 1000,
                        ),
                    )
                )
                metrics.set_engine_stats_source(_engine.model_stats)
    return _engine


def engine_if_started() -> Engine | None:
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
    """The loaded engine model (a TextGenerator, an Embedder or a CrossEncoder, by the
    row's task) for a registry row, loading it if needed (blocking); records the load
    time in metrics and logs a generation model's sampling defaults once."""
    from models_api.models import ModelEntry
    from models_api.selectors import spec_from_entry

    engine = get_engine()
    load = {
        ModelEntry.Task.EMBEDDINGS: engine.embedder,
        ModelEntry.Task.RERANK: engine.reranker,
    }.get(entry.task, engine.generator)
    was_loaded = entry.model_id in engine.loaded_models()
    started = time.monotonic()
    model = load(spec_from_entry(entry))
    if not was_loaded:
        metrics.model_loaded(entry.model_id, model, time.monotonic() - started)
    with _lock:
        announce = model not in _announced
        _announced.add(model)
    if announce:
        log_sampling_defaults(entry)
    return model


def log_sampling_defaults(entry) -> None:
    """Once per load: the defaults a request that leaves sampling fields out gets, so
    they are never invisible (they can change in the admin afterwards: GET
    /v1/models/{id} always shows the ones in force)."""
    from django.conf import settings

    from models_api.models import ModelEntry
    from models_api.sampling import describe

    if entry.task != ModelEntry.Task.TEXT_GENERATION:
        return
    if not settings.GPT3DEV["MODEL_SAMPLING_DEFAULTS"]:
        logger.info("Loaded %s: registry sampling defaults are off (MODEL_SAMPLING_DEFAULTS=0): OpenAI's apply",
                    entry.model_id)
        return
    defaults = entry.sampling_defaults()
    logger.info("Loaded %s: sampling defaults %s (a request's own fields win)", entry.model_id,
                describe(defaults) if defaults else "none: OpenAI's apply")


async def aload_model(entry):
    """:func:`load_model` for async views: a model already loaded is returned at once;
    a load runs on a fresh thread (see inference.threads), never on the event loop."""
    from core.errors import from_engine_error
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
