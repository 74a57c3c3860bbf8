"""Score a validated /v1/rerank or /score request and shape the answer.

A ``rerank`` row (a cross-encoder) scores each (query, document) pair; an embeddings row
scores by the cosine similarity of the two embeddings. The work runs as embeddings do:
on a thread of its own, in the model's batches (see inference.rerank). Usage counts the
tokens the model read; they are charged to the key's tokens per minute as embeddings'
are, when the answer ends.
"""

from __future__ import annotations

import time
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any

from core.errors import from_engine_error
from core.usage import Usage
from inference.errors import EngineError
from inference.threads import run_in_fresh_thread
from models_api.engine import aload_model
from models_api.models import ModelEntry

if TYPE_CHECKING:  # inference.rerank pulls in torch: import it only where a model is used
    from inference.rerank import ScoreResult

QUERY_DOCUMENTS = ("query", "documents")  # how errors name the two sides of a pair
TEXT_PAIRS = ("text_1", "text_2")


async def _scores(
    entry: ModelEntry, first: list[str], second: list[str], *, sides: tuple[str, str], used: Usage,
    max_tokens_per_doc: int | None = None,
) -> ScoreResult:
    from inference.rerank import PairNames, embedding_scores

    names = PairNames(*sides)
    model = await aload_model(entry)
    score = model.score if entry.task == ModelEntry.Task.RERANK else partial(embedding_scores, model)
    try:
        result = await run_in_fresh_thread(score, first, second, names=names, max_tokens_per_doc=max_tokens_per_doc)
    except EngineError as exc:
        raise from_engine_error(exc) from None
    used.read(entry.model_id, result.prompt_tokens)
    return result


async def rerank_create(*, data: dict[str, Any], entry: ModelEntry, used: Usage) -> dict[str, Any]:
    """Jina's and Cohere's answer: results sorted by relevance, best first."""
    documents = data["documents"]
    result = await _scores(entry, [data["query"]], documents, sides=QUERY_DOCUMENTS, used=used,
                           max_tokens_per_doc=data.get("max_tokens_per_doc"))
    order = sorted(range(len(documents)), key=lambda i: result.scores[i], reverse=True)
    if data.get("top_n"):
        order = order[: data["top_n"]]
    with_documents = data.get("return_documents") is not False
    results = []
    for index in order:
        item: dict[str, Any] = {"index": index, "relevance_score": result.scores[index]}
        if with_documents:
            item["document"] = {"text": documents[index]}
        results.append(item)
    return {
        "id": f"rerank-{uuid.uuid4().hex}",
        "model": entry.model_id,
        "usage": {"total_tokens": result.prompt_tokens},
        "results": results,
        "meta": {"tokens": {"input_tokens": result.prompt_tokens, "output_tokens": 0}},  # Cohere's
    }


async def score_create(*, data: dict[str, Any], entry: ModelEntry, used: Usage) -> dict[str, Any]:
    """vLLM's /score answer: one score per pair, in the order given."""
    result = await _scores(entry, data["text_1"], data["text_2"], sides=TEXT_PAIRS, used=used)
    return {
        "id": f"score-{uuid.uuid4().hex}",
        "object": "list",
        "created": int(time.time()),
        "model": entry.model_id,
        "data": [{"index": i, "object": "score", "score": score} for i, score in enumerate(result.scores)],
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens, "completion_tokens": 0},
    }
