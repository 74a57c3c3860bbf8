"""Compute embeddings for a validated request and shape OpenAI's answer.

Planned in two steps, as completions are: :func:`plan_embeddings` loads the model and
counts the input tokens (the view reserves them against the key's tokens-per-minute
before any forward pass), :func:`run_embeddings` computes.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import from_engine_error, invalid_value
from core.usage import Usage
from inference.errors import EngineError
from inference.threads import run_in_fresh_thread
from models_api.engine import aload_model
from models_api.models import ModelEntry


@dataclass(frozen=True)
class EmbeddingsPlan:
    """A validated request with its model loaded and its input tokens counted."""

    entry: ModelEntry
    embedder: Any
    inputs: list
    as_base64: bool
    prompt_tokens: int  # counted before any forward pass: what the key's TPM reserves


def _count_tokens(embedder: Any, inputs: list) -> int:
    """Tokens the model will read (token-id inputs: the ids plus the special tokens put
    around them; ids in another encoding are counted as given)."""
    if isinstance(inputs[0], str):
        return sum(embedder.count_tokens(text) for text in inputs)
    specials = embedder.count_tokens("")
    return sum(len(row) + specials for row in inputs)


async def plan_embeddings(*, data: dict[str, Any], entry: ModelEntry) -> EmbeddingsPlan:
    embedder = await aload_model(entry)
    dimensions = data.get("dimensions")
    if dimensions is not None and dimensions != embedder.dimensions:
        raise invalid_value(
            "dimensions",
            f"the model '{entry.model_id}' only returns {embedder.dimensions}-dimensional embeddings "
            f"and cannot shorten them to {dimensions}.",
        )
    inputs = data["input"]
    tokens = await run_in_fresh_thread(_count_tokens, embedder, inputs)
    return EmbeddingsPlan(entry, embedder, inputs, data.get("encoding_format") == "base64", tokens)


async def run_embeddings(plan: EmbeddingsPlan, used: Usage) -> dict[str, Any]:
    embedder, inputs = plan.embedder, plan.inputs
    compute = embedder.embed_texts if isinstance(inputs[0], str) else embedder.embed_token_ids
    try:
        result = await run_in_fresh_thread(compute, inputs)
    except EngineError as exc:
        raise from_engine_error(exc) from None
    used.read(plan.entry.model_id, result.prompt_tokens)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": _encode(vector, plan.as_base64)}
            for index, vector in enumerate(result.vectors)
        ],
        "model": plan.entry.model_id,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }


def _encode(vector: list[float], as_base64: bool) -> list[float] | str:
    if not as_base64:
        return vector
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
