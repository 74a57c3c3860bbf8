"""Request parsing and SSE framing shared by the API views."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, StreamingHttpResponse

from core.errors import APIError


def parse_json_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object, or an APIError that says what is wrong with it."""
    content_type = request.content_type or ""
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise APIError(
            415,
            f"Unsupported Content-Type '{content_type or 'none'}': send the body as application/json.",
            code="unsupported_media_type",
        )
    try:
        raw = request.body
    except RequestDataTooBig:
        raise APIError(413, "The request body is too large.", code="request_too_large") from None
    if not raw.strip():
        raise APIError(400, "The request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise APIError(400, f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise APIError(400, "The JSON body is nested too deeply.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.", code="invalid_json")
    return body


def sse_frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def sse_response(events: AsyncIterator[bytes]) -> StreamingHttpResponse:
    """An SSE answer over an async generator: Django's ASGI handler sends each chunk as
    it is produced, under uvicorn and under daphne's runserver alike."""
    response = StreamingHttpResponse(events, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # tell nginx-style proxies not to buffer
    return response
