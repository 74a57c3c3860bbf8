"""Token counts and ids for /tokenize, and text for /detokenize, with the model's own
tokenizer.

A prompt is encoded as /v1/completions encodes it and messages are rendered as
/v1/chat/completions renders them (the same message conversion, the same tool prompt),
so ``count`` is the ``prompt_tokens`` those endpoints report for the same input. Works
for every row this server loads: generation models (prompt and, for chat models,
messages), embeddings models and cross-encoders (prompt). ``max_model_len`` is the
window the engine enforces.
"""

from __future__ import annotations

import asyncio
from typing import Any

from completions.serving_chat import render_prompt, require_chat
from core.errors import APIError, from_engine_error, invalid_value
from inference.errors import InvalidInput, check_vocabulary
from models_api.engine import aload_model
from models_api.models import ModelEntry


def _window(model: Any) -> int:
    return int(getattr(model, "context_length", None) or model.max_length)


def _with_specials(tokenizer: Any, ids: list[int]) -> list[int]:
    """``ids`` with the special tokens the tokenizer puts around a text (a BOS, or
    [CLS] ... [SEP]), learned from encoding the empty string: the first in front, the
    rest at the end."""
    template = list(tokenizer("", add_special_tokens=True)["input_ids"])
    return template[:1] + ids + template[1:]


def _encode_prompt(model: Any, entry: ModelEntry, text: str, add_special_tokens: bool) -> list[int]:
    if add_special_tokens and entry.task == ModelEntry.Task.TEXT_GENERATION:
        return model.encode(text)  # exactly what /v1/completions does with a string prompt
    return list(model.tokenizer(text, add_special_tokens=add_special_tokens, truncation=False)["input_ids"])


def _encode_chat(model: Any, entry: ModelEntry, data: dict[str, Any]) -> list[int]:
    """The chat prompt, built as /v1/chat/completions builds it."""
    require_chat(entry)
    if not getattr(model, "has_chat_template", False):
        raise APIError(400, f"The model '{entry.model_id}' has no chat template.", param="messages")
    ids = render_prompt(model, data, add_generation_prompt=data["add_generation_prompt"])
    return _with_specials(model.tokenizer, ids) if data["add_special_tokens"] else ids


async def tokenize(*, data: dict[str, Any], entry: ModelEntry) -> dict[str, Any]:
    model = await aload_model(entry)
    if "messages" in data:
        if entry.task != ModelEntry.Task.TEXT_GENERATION:
            raise invalid_value("messages", f"the model '{entry.model_id}' is not a chat model; send 'prompt'.")
        ids = await asyncio.to_thread(_encode_chat, model, entry, data)  # templates are CPU work
    else:
        ids = await asyncio.to_thread(_encode_prompt, model, entry, data["prompt"], data["add_special_tokens"])
    body: dict[str, Any] = {"count": len(ids), "max_model_len": _window(model), "tokens": ids}
    if data.get("return_token_strs"):
        body["token_strs"] = model.tokenizer.convert_ids_to_tokens(ids)
    return body


async def detokenize(*, data: dict[str, Any], entry: ModelEntry) -> dict[str, Any]:
    model = await aload_model(entry)
    ids = data["tokens"]
    try:
        check_vocabulary(ids, len(model.tokenizer), param="tokens")
    except InvalidInput as exc:
        raise from_engine_error(exc) from None
    # Special tokens stay and no spaces are "cleaned up", so detokenize(tokenize(x)) == x.
    text = await asyncio.to_thread(
        model.tokenizer.decode, ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    return {"prompt": text}
