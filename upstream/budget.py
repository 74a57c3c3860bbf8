"""What an upstream request holds of its key's tokens-per-minute before the upstream counts.

There is no tokenizer here, so the prompt is estimated at four characters a token
(OpenAI's rule of thumb; token ids count one each). The answer's share is the request's
own bound: ``max_tokens`` (or ``max_completion_tokens``) for every sequence, else the
row's context window (``max_context_tokens``), else ``UPSTREAM_DEFAULT_MAX_TOKENS``. A
text completion without ``max_tokens`` has OpenAI's default of 16, and is sent upstream
with it, so a server whose own default is "until the window ends" cannot spend more
than was reserved. When the answer ends the reservation is settled to the upstream's
``usage`` (see :mod:`access.ratelimit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings

from core.validation import text_chars

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


@dataclass(frozen=True)
class Budget:
    tokens: int  # reserved against the key's TPM
    send_max_tokens: int | None = None  # set on the body sent upstream (the client gave none)


def _ceil_quarter(chars: int) -> int:
    return -(-chars // 4)


def _token_ids(value: Any) -> int:
    """Token ids in a prompt or input given as ids (a list of ints, or of lists of ints)."""
    if not isinstance(value, list):
        return 0
    if all(isinstance(x, int) for x in value):
        return len(value)
    return sum(len(x) for x in value if isinstance(x, list))


def completion_budget(data: dict[str, Any], entry) -> Budget:
    """The reservation of a validated completion or chat request to an upstream row."""
    chat = "messages" in data
    prompt = data["messages"] if chat else data["prompt"]
    if chat or isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], int)):
        prompts = 1
    else:
        prompts = max(1, len(prompt))
    prompt_tokens = _ceil_quarter(text_chars(prompt)) + _token_ids(prompt)
    requested = data.get("max_completion_tokens") or data.get("max_tokens")
    send = None
    if requested is None:
        if not chat:
            requested = send = COMPLETIONS_DEFAULT_MAX_TOKENS
        else:
            requested = entry.max_context_tokens or int(settings.GPT3DEV["UPSTREAM_DEFAULT_MAX_TOKENS"])
    sequences = max(data.get("n") or 1, data.get("best_of") or 1) * prompts
    return Budget(prompt_tokens + requested * sequences, send)


def embeddings_budget(data: dict[str, Any]) -> int:
    """The reservation of a validated embeddings request to an upstream row."""
    inputs = data["input"]
    return _ceil_quarter(text_chars(inputs)) + _token_ids(inputs)


def body_for_upstream(body: dict[str, Any], budget: Budget) -> dict[str, Any]:
    """The client's body, with the ``max_tokens`` the budget counted on when it had none."""
    if budget.send_max_tokens is None:
        return body
    return {**body, "max_tokens": budget.send_max_tokens}
