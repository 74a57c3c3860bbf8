"""The engine: a registry of loaded models, loaded lazily and at most once.

``Engine.generator(spec)`` / ``Engine.embedder(spec)`` / ``Engine.reranker(spec)``
return a ready object for a registry entry, loading it on first use behind a per-model
lock (concurrent first calls load once), reloading when the spec for an id changes,
evicting the least recently used model beyond ``max_loaded_models``, and remembering
failed loads for ``failure_ttl_s`` seconds so a broken entry does not trigger a load
attempt per request.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .constraints import GrammarLimits
from .embeddings import Embedder, EmbeddingResult
from .errors import ModelUnavailable
from .generator import TextGenerator
from .loading import choose_device, choose_dtype, load_causal_lm, resolve_model_folder, weight_scheme
from .memory import budget_bytes, give_back_freed_memory
from .rerank import CrossEncoder
from .scheduling_policy import SchedulerLimits
from .sources import is_offline
from .threads import call_in_fresh_thread
from .types import ModelSpec

__all__ = ["Engine", "EngineConfig", "TextGenerator", "Embedder", "EmbeddingResult", "CrossEncoder"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    cache_dir: Path  # GGUF conversions (keyed by the file's sha256) and int8/int4 weights
    max_loaded_models: int = 4  # LRU eviction beyond this
    # Scheduler limits: the defaults are SchedulerLimits' (inference.scheduling_policy).
    max_batch_size: int = SchedulerLimits.max_batch_size  # max sequences decoding together per model
    max_queue: int = SchedulerLimits.max_queue  # sequences waiting per model; beyond -> EngineOverloaded
    # KV pool per generation model, allocated at load (capped at max_batch_size full
    # windows): bytes, or a float in (0, 1] = that fraction of the memory available then.
    kv_cache_memory: int | float = 2 << 30
    kv_block_size: int = 16  # tokens per pool block (the unit of prefix reuse)
    max_step_tokens: int = SchedulerLimits.max_step_tokens  # per forward while some row decodes
    max_prefill_tokens: int = SchedulerLimits.max_prefill_tokens  # per forward while every row is prefilling
    max_skip_s: float = SchedulerLimits.max_skip_s  # how long a request that does not fit may be overtaken
    default_device: str = "auto"  # for specs saying "auto": cuda, then mps, then cpu
    hf_offline: bool = False  # HF_HUB_OFFLINE in the environment is honoured too
    failure_ttl_s: float = 30.0  # how long a failed load is remembered
    # What dtype "auto" means on CPU (see docs/models.md, "dtype, device and determinism").
    cpu_auto_dtype: str = "float32"
    # The window of a model whose config and tokenizer do not say (MAX_CONTEXT_TOKENS).
    default_context_tokens: int = 2048
    # Bounds on grammar work: size, depth, compile workers, refusals, mask budget.
    grammar: GrammarLimits = GrammarLimits()


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    spec: ModelSpec | None = None
    obj: Any = None  # TextGenerator | Embedder | CrossEncoder
    last_used: float = 0.0
    failed_spec: ModelSpec | None = None
    failure: ModelUnavailable | None = None
    failed_until: float = 0.0


class Engine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._lock = threading.Lock()  # guards _entries only; loads hold the entry's lock
        self._entries: dict[str, _Entry] = {}
        self._closed = False

    # ------------------------------------------------------------------ public API
    def generator(self, spec: ModelSpec) -> TextGenerator:
        if spec.task != "text-generation":
            raise ModelUnavailable(f"model {spec.id!r} is not a text-generation model")
        return self._get(spec)

    def embedder(self, spec: ModelSpec) -> Embedder:
        if spec.task != "embeddings":
            raise ModelUnavailable(f"model {spec.id!r} is not an embeddings model")
        return self._get(spec)

    def reranker(self, spec: ModelSpec) -> CrossEncoder:
        if spec.task != "rerank":
            raise ModelUnavailable(f"model {spec.id!r} is not a reranking (cross-encoder) model")
        return self._get(spec)

    def unload(self, model_id: str) -> bool:
        with self._lock:
            entry = self._entries.get(model_id)
        if entry is None:
            return False
        with entry.lock:
            return self._release(entry)

    def loaded_models(self) -> list[str]:
        with self._lock:
            return [mid for mid, e in self._entries.items() if e.obj is not None]

    def cached(self, spec: ModelSpec) -> Any | None:
        """The model already loaded for exactly this spec, else None; never loads or waits."""
        with self._lock:
            entry = self._entries.get(spec.id)
        if entry is None or entry.obj is None or entry.spec != spec:
            return None
        entry.last_used = time.monotonic()
        return entry.obj

    def model_stats(self) -> dict[str, dict]:
        """Per loaded model: its scheduler's ``{"running", "waiting"}`` (empty for embedders)."""
        with self._lock:
            loaded = [(mid, e.obj) for mid, e in self._entries.items() if e.obj is not None]
        return {mid: (obj.stats() if hasattr(obj, "stats") else {}) for mid, obj in loaded}

    def shutdown(self) -> None:
        self._closed = True
        with self._lock:
            entries = list(self._entries.values())
        for entry in entries:
            with entry.lock:
                self._release(entry)

    # ------------------------------------------------------------------- internals
    def _get(self, spec: ModelSpec) -> Any:
        if self._closed:
            raise ModelUnavailable("the engine is shut down")
        with self._lock:
            entry = self._entries.setdefault(spec.id, _Entry())
        with entry.lock:
            if entry.obj is not None and entry.spec == spec:
                entry.last_used = time.monotonic()
                return entry.obj
            if entry.obj is not None:
                log.info("spec of %s changed: reloading", spec.id)
                self._release(entry)
            now = time.monotonic()
            if entry.failure is not None and entry.failed_spec == spec and now < entry.failed_until:
                raise entry.failure
            try:
                # On a thread that ends with the load, so the caller's thread keeps no
                # OpenMP workers from it (they would slow every decode step: .threads).
                obj = call_in_fresh_thread(self._load, spec)
            except Exception as exc:
                failure = exc if isinstance(exc, ModelUnavailable) else ModelUnavailable(
                    f"model {spec.id!r} cannot be loaded: {exc}"
                )
                entry.failure, entry.failed_spec = failure, spec
                entry.failed_until = time.monotonic() + self.config.failure_ttl_s
                if failure is exc:
                    raise
                raise failure from exc
            entry.obj, entry.spec, entry.failure = obj, spec, None
            entry.last_used = time.monotonic()
        self._evict(keep=spec.id)
        return obj

    def _load(self, spec: ModelSpec) -> Any:
        from transformers import AutoModel, AutoTokenizer

        offline = is_offline(self.config.hf_offline)
        folder = resolve_model_folder(spec, Path(self.config.cache_dir), offline)
        device = choose_device(spec.device, self.config.default_device)
        dtype = choose_dtype(spec.dtype, device, cpu_auto=self.config.cpu_auto_dtype)
        common = {"trust_remote_code": spec.trust_remote_code}
        tokenizer = AutoTokenizer.from_pretrained(str(folder), **common)
        if spec.task in ("embeddings", "rerank"):
            if weight_scheme(spec.dtype, device, "float32") is not None:
                raise ModelUnavailable(f"model {spec.id!r}: int8/int4 apply to text-generation models only")
        if spec.task == "rerank":
            from transformers import AutoModelForSequenceClassification

            log.info("loading cross-encoder %s from %s on %s as %s", spec.id, folder, device, dtype)
            model = AutoModelForSequenceClassification.from_pretrained(str(folder), dtype=dtype, **common)
            return CrossEncoder(spec, model.to(device).eval(), tokenizer, folder, device)
        if spec.task == "embeddings":
            log.info("loading %s from %s on %s as %s", spec.id, folder, device, dtype)
            model = AutoModel.from_pretrained(str(folder), dtype=dtype, **common).to(device).eval()
            return Embedder(spec, model, tokenizer, folder, device)
        log.info("loading %s from %s on %s (dtype %s)", spec.id, folder, device, spec.dtype)
        model = load_causal_lm(
            folder, spec, device, cache_dir=Path(self.config.cache_dir), cpu_auto=self.config.cpu_auto_dtype
        )
        give_back_freed_memory()  # loading's temporaries (a quantized entry's bytes, int4 repacking)
        return TextGenerator(
            spec, model, tokenizer, device,
            default_context_tokens=self.config.default_context_tokens,
            grammar_limits=self.config.grammar,
            limits=SchedulerLimits(
                max_batch_size=self.config.max_batch_size, max_queue=self.config.max_queue,
                max_step_tokens=self.config.max_step_tokens,
                max_prefill_tokens=self.config.max_prefill_tokens, max_skip_s=self.config.max_skip_s,
            ),
            kv_cache_bytes=budget_bytes(self.config.kv_cache_memory, device.type),
            kv_block_size=self.config.kv_block_size,
        )

    def _release(self, entry: _Entry) -> bool:
        """Drop the loaded object (caller holds entry.lock)."""
        obj, entry.obj, entry.spec = entry.obj, None, None
        if obj is None:
            return False
        close = getattr(obj, "close", None)
        if close is not None:
            close()
        del obj
        gc.collect()
        give_back_freed_memory()
        return True

    def _evict(self, keep: str) -> None:
        while True:
            with self._lock:
                loaded = [(e.last_used, mid, e) for mid, e in self._entries.items() if e.obj is not None]
            if len(loaded) <= max(1, self.config.max_loaded_models):
                return
            victims = sorted((x for x in loaded if x[1] != keep), key=lambda x: x[0])
            if not victims:
                return
            _, mid, entry = victims[0]
            log.info("evicting %s (least recently used)", mid)
            with entry.lock:
                self._release(entry)
