"""An upstream row's ``/v1/responses``: the client's body goes to its servers' own
``/v1/responses`` (vLLM serves it), with the gateway's failover, limits and renaming.

Nothing is stored here: a forwarded response's stored state (``GET``, ``DELETE``,
``input_items``, ``cancel``, ``previous_response_id``) is the upstream server's business,
and this server answers 404 for its ids.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings
from django.http import HttpResponse, JsonResponse

from access.ratelimit import areserve_tokens
from core.http import sse_response
from core.usage import Usage
from observability.metrics import GenerationTimer
from responses.events import event_frame
from responses.items import input_chars
from upstream import forward

RESPONSES_PATH = "/responses"


def reservation(data: dict[str, Any], entry) -> int:
    """Tokens held against the key's TPM: four characters a token, plus the answer's bound."""
    chars = input_chars(data.get("input")) + len(data.get("instructions") or "")
    answer = (data.get("max_output_tokens") or entry.max_context_tokens
              or settings.GPT3DEV["UPSTREAM_DEFAULT_MAX_TOKENS"])
    return -(-chars // 4) + int(answer)


def _usage(obj: Any) -> tuple[int, int] | None:
    usage = obj.get("usage") if isinstance(obj, dict) else None
    if not isinstance(usage, dict):
        return None
    numbers = usage.get("input_tokens"), usage.get("output_tokens")
    if all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**31 for n in numbers):
        return numbers  # type: ignore[return-value]
    return None


def _renamed(obj: dict[str, Any], model_id: str) -> dict[str, Any]:
    if isinstance(obj.get("model"), str):
        obj["model"] = model_id
    if isinstance(obj.get("response"), dict) and "model" in obj["response"]:
        obj["response"]["model"] = model_id
    return obj


async def forward_response(request, data: dict[str, Any], entry, used: Usage) -> HttpResponse:
    await areserve_tokens(request, reservation(data, entry), param="max_output_tokens")
    hops = forward.incoming_hops(request)
    body = request.openai_body
    timer = GenerationTimer(used)
    if not data.get("stream"):
        status, answer = await forward.forward_json(entry, RESPONSES_PATH, body, hops)
        if status < 300:
            counts = _usage(answer)
            if counts is not None:
                timer.usage(*counts)
            else:
                timer.done()
        return JsonResponse(answer, status=status)
    opened = await forward.open_event_stream(entry, RESPONSES_PATH, body, hops)
    if isinstance(opened, HttpResponse):  # the upstream's error answer
        return opened
    return sse_response(_relay(entry, opened, timer))


async def _relay(entry, stream: forward.EventStream, timer: GenerationTimer) -> AsyncIterator[bytes]:
    data: str | None = stream.first
    try:
        while data is not None and data != "[DONE]":
            try:
                event = json.loads(data)
            except ValueError:
                break
            if not isinstance(event, dict):
                break
            if event.get("type") in ("response.output_text.delta", "response.function_call_arguments.delta"):
                timer.tokens(1)
            counts = _usage(event.get("response"))
            if counts is not None:
                timer.usage(*counts)
            if isinstance(event.get("type"), str):
                yield event_frame(_renamed(event, entry.model_id))
            data = await stream.next()
    except Exception:  # cut off or stalled: the stream simply ends (nothing is retried mid-answer)
        pass
    finally:
        await stream.close()
