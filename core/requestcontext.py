"""The request being served here: its record and the context variable that holds it.

The access log's middleware makes the record and sets it; the auth middleware, views and
services fill it in (key name, model, tokens, time to first token), and the access log,
the metrics and the rate limiter's settlement read it when the request ends. It lives in
``core`` so that none of those sides imports another.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings


@dataclass
class RequestRecord:
    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.monotonic)
    key_name: str | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft: float | None = None
    served_model: str | None = None  # a registry id: the only model label metrics get
    prompt: Any = None  # only with ACCESS_LOG_PROMPTS=1
    status: int = 0
    on_end: list[Callable[["RequestRecord"], None]] = field(default_factory=list)
    finished: bool = False

    @property
    def used_tokens(self) -> int:
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)




def note_request_body(body: dict[str, Any]) -> None:
    """Called by the JSON views with the parsed body: the model and, when asked for, the prompt."""
    record = current_record()
    if record is None:
        return
    if isinstance(body.get("model"), str) and record.model is None:
        record.model = body["model"][:128]
    if settings.GPT3DEV["ACCESS_LOG_PROMPTS"]:
        for name in ("messages", "prompt", "input"):
            if name in body:
                record.prompt = body[name]
                break


def note_served_model(model_id: str) -> None:
    """The request's model resolved to a served registry entry (bounded metric labels:
    a client's made-up model names never become label values)."""
    record = current_record()
    if record is not None:
        record.served_model = model_id
        record.model = model_id


_current: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar("gpt3dev_request", default=None)


def current_record() -> RequestRecord | None:
    """The record of the request being served here (None outside a request)."""
    return _current.get()


def set_current_record(record: RequestRecord) -> None:
    _current.set(record)
