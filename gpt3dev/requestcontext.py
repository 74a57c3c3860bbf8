"""The request being served here, as a context variable.

The access log's middleware sets it; metrics and services read it to fill in the
request's record (model, tokens, time to first token). It lives on its own so that
neither side imports the other.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpt3dev.accesslog import RequestRecord

_current: contextvars.ContextVar["RequestRecord | None"] = contextvars.ContextVar("gpt3dev_request", default=None)


def current_record() -> "RequestRecord | None":
    """The record of the request being served here (None outside a request)."""
    return _current.get()


def set_current_record(record: "RequestRecord") -> None:
    _current.set(record)
