"""ASGI middleware that enforces ``MAX_REQUEST_BYTES`` before a body is read.

Django's ASGI handler reads the whole body (spooling it to a temporary file) before
any middleware or view runs, and only then compares it with
``DATA_UPLOAD_MAX_MEMORY_SIZE``; that happens before authentication, so anyone could
make the server read and store 200 MB. This wrapper sits in front of Django:

* a declared ``Content-Length`` over the cap (or one that is not a number) is answered
  413 at once, without reading a byte of the body;
* a body without a length (chunked) is counted as it arrives and answered 413 as soon
  as it passes the cap; Django is told the client went away, so it stops reading. When
  such a request ends, its size decides the heap trim (observability.memory) as a declared
  length does for the others.

The answer is OpenAI's error shape with ``Connection: close`` (the server drops the
rest of the upload), and it is written to the access log and the request metrics.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.conf import settings

from core.errors import APIError
from observability.memory import after_request

Scope = dict[str, Any]


def _declared_length(scope: Scope) -> int | None:
    """The Content-Length header (-1 when it is malformed), or None without one."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return -1
            return length if length >= 0 else -1
    return None


class RequestBodyLimit:
    """Refuse bodies over ``settings.DATA_UPLOAD_MAX_MEMORY_SIZE`` (``MAX_REQUEST_BYTES``)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        started = time.monotonic()
        declared = _declared_length(scope)
        if declared is not None and (declared < 0 or declared > limit):
            await _refuse(scope, send, limit, started, malformed=declared < 0)
            return
        received = 0
        refused = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await _refuse(scope, send, limit, started)
                    return {"type": "http.disconnect"}  # Django stops reading and answers nothing
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            if not refused:  # after our 413 nothing else may be sent
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        finally:
            # A body sent without a length (chunked) is only measured here: the access
            # log's trim after a large body reads the Content-Length header.
            if declared is None:
                after_request(received)


async def _refuse(scope: Scope, send, limit: int, started: float, *, malformed: bool = False) -> None:
    if malformed:
        error = APIError(400, "The Content-Length header is not a valid length.", code="invalid_request")
    else:
        error = APIError(
            413,
            f"The request body is too large: this server accepts at most {limit} bytes (MAX_REQUEST_BYTES).",
            code="request_too_large",
        )
    from observability.accesslog import log_early_answer

    request_id = log_early_answer(scope, error.status, started)
    body = json.dumps(error.payload()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                (b"x-request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
