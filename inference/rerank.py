"""Relevance scores of text pairs, for /v1/rerank and /score, two ways.

* A **cross-encoder** (:class:`CrossEncoder`, a registry row with task ``rerank``):
  ``AutoModelForSequenceClassification`` reads the query and a document together and
  gives one logit; the score is its sigmoid (two or more labels: the softmax
  probability of the last, the "relevant" one), as sentence-transformers' CrossEncoder
  and vLLM score them.
* An **embeddings model** (:func:`embedding_scores`): the cosine similarity of the two
  texts' normalised embeddings, as vLLM scores with an embedding model.

Pairs are either one first text against every second text (a query and its
documents) or the i-th first text against the i-th second one. Both ways run like
embeddings: on a thread of their own, pairs sorted by length into batches of
``_BATCH`` forwards, under the model's lock. A pair or text longer than the window is
an ``InvalidInput`` naming the second text's index (``documents[3]``), never cut;
``max_tokens_per_doc`` (Cohere's field) cuts each second text to that many tokens on
request.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .errors import InvalidInput
from .types import ModelSpec
from .window import embedding_window

if TYPE_CHECKING:
    from .embeddings import Embedder

_BATCH = 32  # pairs per forward, as embeddings


@dataclass(frozen=True)
class ScoreResult:
    scores: list[float]  # one per pair, in the order given
    prompt_tokens: int  # tokens the model read


@dataclass(frozen=True)
class PairNames:
    """How errors name the two sides: ``("query", "documents")`` or ``("text_1", "text_2")``."""

    first: str = "query"
    second: str = "documents"

    def of_first(self, index: int, count: int) -> str:
        return self.first if count == 1 else f"{self.first}[{index}]"

    def of_second(self, index: int) -> str:
        return f"{self.second}[{index}]"


def pairs_of(first: list[str], second: list[str]) -> list[tuple[int, int]]:
    """(first index, second index) per pair: 1 x N, or N x N side by side."""
    if len(first) == 1:
        return [(0, j) for j in range(len(second))]
    if len(first) != len(second):
        raise InvalidInput(f"give one first text, or as many as second texts ({len(second)}), not {len(first)}")
    return [(i, i) for i in range(len(second))]


def cut_to_tokens(tokenizer: Any, text: str, limit: int | None) -> str:
    """``text`` cut after its first ``limit`` tokens (without special tokens), at the
    character where that token ends; the text itself when it is shorter or no limit."""
    if limit is None:
        return text
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False)
    if len(encoded["input_ids"]) <= limit:
        return text
    return text[: encoded["offset_mapping"][limit - 1][1]]


def _too_long(max_length: int, tokens: int, what: str, param: str) -> InvalidInput:
    return InvalidInput(
        f"This model's maximum context length is {max_length} tokens, however {what} has {tokens} tokens. "
        f"Please reduce the length of {param}.",
        param=param,
        code="context_length_exceeded",
    )


class CrossEncoder:
    """One loaded cross-encoder. ``score`` is blocking; a lock serialises forwards."""

    def __init__(self, spec: ModelSpec, model: Any, tokenizer: Any, folder: Path, device: torch.device) -> None:
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        config = model.config
        self.weight_format: str = str(next(model.parameters()).dtype).removeprefix("torch.")
        self.max_length: int = int(
            spec.max_context_tokens
            or embedding_window(None, getattr(config, "max_position_embeddings", None),
                                getattr(tokenizer, "model_max_length", None))
        )
        self.num_labels: int = int(getattr(config, "num_labels", 1) or 1)
        self._lock = threading.Lock()

    def score(
        self, first: list[str], second: list[str], *, names: PairNames = PairNames(),
        max_tokens_per_doc: int | None = None,
    ) -> ScoreResult:
        pairs = pairs_of(first, second)
        second = [cut_to_tokens(self.tokenizer, text, max_tokens_per_doc) for text in second]
        encoded = []
        for i, j in pairs:
            row = self.tokenizer(first[i], second[j], add_special_tokens=True, truncation=False)
            if len(row["input_ids"]) > self.max_length:
                what = f"document {j} with the query" if names.second == "documents" else f"pair {j}"
                raise _too_long(self.max_length, len(row["input_ids"]), what, names.of_second(j))
            encoded.append(row)
        scores: list[float] = [0.0] * len(encoded)
        order = sorted(range(len(encoded)), key=lambda k: len(encoded[k]["input_ids"]))
        pad = self.tokenizer.pad_token_id or 0
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), _BATCH):
                chunk = order[start : start + _BATCH]
                width = max(len(encoded[k]["input_ids"]) for k in chunk)
                batch = {"input_ids": torch.full((len(chunk), width), pad, dtype=torch.long),
                         "attention_mask": torch.zeros((len(chunk), width), dtype=torch.long)}
                if "token_type_ids" in encoded[chunk[0]]:
                    batch["token_type_ids"] = torch.zeros((len(chunk), width), dtype=torch.long)
                for r, k in enumerate(chunk):
                    row = encoded[k]
                    length = len(row["input_ids"])
                    batch["input_ids"][r, :length] = torch.tensor(row["input_ids"], dtype=torch.long)
                    batch["attention_mask"][r, :length] = 1
                    if "token_type_ids" in batch:
                        batch["token_type_ids"][r, :length] = torch.tensor(row["token_type_ids"], dtype=torch.long)
                logits = self.model(**{name: t.to(self.device) for name, t in batch.items()}).logits.float()
                if self.num_labels == 1:
                    values = torch.sigmoid(logits[:, 0])
                else:
                    values = torch.softmax(logits, dim=-1)[:, -1]
                for r, k in enumerate(chunk):
                    scores[k] = float(values[r])
        return ScoreResult(scores=scores, prompt_tokens=sum(len(row["input_ids"]) for row in encoded))


def embedding_scores(
    embedder: Embedder, first: list[str], second: list[str], *, names: PairNames = PairNames(),
    max_tokens_per_doc: int | None = None,
) -> ScoreResult:
    """Cosine similarity of each pair's embeddings (they are L2-normalised, so the dot
    product); every text is embedded once, in the embedder's batches."""
    pairs = pairs_of(first, second)
    second = [cut_to_tokens(embedder.tokenizer, text, max_tokens_per_doc) for text in second]
    encoded: list[list[int]] = []
    for index, text in enumerate(first):
        ids = embedder.encode_text(text)
        if len(ids) > embedder.max_length:
            param = names.of_first(index, len(first))
            what = "the query" if names.first == "query" else f"{names.first} {index}"
            raise _too_long(embedder.max_length, len(ids), what, param)
        encoded.append(ids)
    for index, text in enumerate(second):
        ids = embedder.encode_text(text)
        if len(ids) > embedder.max_length:
            what = f"document {index}" if names.second == "documents" else f"{names.second} {index}"
            raise _too_long(embedder.max_length, len(ids), what, names.of_second(index))
        encoded.append(ids)
    result = embedder.embed_encoded(encoded)
    vectors = torch.tensor(result.vectors, dtype=torch.float32)
    left = vectors[[i for i, _ in pairs]]
    right = vectors[[len(first) + j for _, j in pairs]]
    scores = (left * right).sum(dim=-1).clamp(-1.0, 1.0)
    return ScoreResult(scores=[float(s) for s in scores], prompt_tokens=result.prompt_tokens)
