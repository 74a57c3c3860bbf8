"""Compute embeddings for a validated request and shape OpenAI's answer."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from gpt3dev import metrics
from gpt3dev.errors import from_engine_error, invalid_value
from inference.errors import EngineError
from inference.threads import run_in_fresh_thread
from models_api.engine import aload_model
from models_api.models import ModelEntry


async def embeddings_create(*, data: dict[str, Any], entry: ModelEntry) -> dict[str, Any]:
    embedder = await aload_model(entry)
    dimensions = data.get("dimensions")
    if dimensions is not None and dimensions != embedder.dimensions:
        raise invalid_value(
            "dimensions",
            f"the model '{entry.model_id}' only returns {embedder.dimensions}-dimensional embeddings "
            f"and cannot shorten them to {dimensions}.",
        )
    inputs = data["input"]
    compute = embedder.embed_texts if isinstance(inputs[0], str) else embedder.embed_token_ids
    try:
        result = await run_in_fresh_thread(compute, inputs)
    except EngineError as exc:
        raise from_engine_error(exc) from None
    metrics.embeddings_done(entry.model_id, prompt_tokens=result.prompt_tokens)
    as_base64 = data.get("encoding_format") == "base64"
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": _encode(vector, as_base64)}
            for index, vector in enumerate(result.vectors)
        ],
        "model": entry.model_id,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }


def _encode(vector: list[float], as_base64: bool) -> list[float] | str:
    if not as_base64:
        return vector
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
