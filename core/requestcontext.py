"""The request being served here: its id, method, path, start and status.

The access log's middleware makes the record when a request arrives and sets the status
when it ends. The context variable holds it so that code far from the view (an upstream
forward) can pass the request's id on; what the request *used* is not here but in
:mod:`core.usage`, which travels explicitly.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field


@dataclass
class RequestRecord:
    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.monotonic)
    status: int = 0
    finished: bool = False


_current: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar("gpt3dev_request", default=None)


def current_record() -> RequestRecord | None:
    """The record of the request being served here (None outside a request)."""
    return _current.get()


def set_current_record(record: RequestRecord) -> None:
    _current.set(record)
