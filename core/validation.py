"""The one shape every API view has: parse JSON, validate with a serializer, call a service.

Parsing and validating a body is CPU work that grows with the body (a 9 MB JSON body
with 100,000 messages takes seconds), so async views call :func:`avalidated`, which does
it on a worker thread: the event loop keeps serving /healthz and running streams. Cheap
caps on the number of prompts and messages and on the characters of text
(``MAX_PROMPTS``, ``MAX_MESSAGES``, ``MAX_INPUT_CHARS``) are checked right after the JSON
is parsed, before DRF walks the body.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings
from rest_framework import serializers

from core.errors import invalid_value, validation_error
from core.http import parse_json_body


def validated(request, serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
    """The request body, validated; a 400/413/415 APIError names what is wrong."""
    body = parse_json_body(request)
    request.openai_body = body  # as sent: what an upstream model's server receives
    check_input_caps(body)
    serializer = serializer_class(data=body)
    if not serializer.is_valid():
        raise validation_error(serializer.errors)
    return serializer.validated_data


async def avalidated(request, serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
    """:func:`validated` on a worker thread (the request's context goes with it)."""
    return await asyncio.to_thread(validated, request, serializer_class)


def check_input_caps(body: dict[str, Any]) -> None:
    """Refuse a body with too many prompts or messages, or too much text, before any
    expensive work (validation, tokenising, templates). Only counts: the serializer
    still checks the shapes."""
    conf = settings.GPT3DEV
    prompt, messages, inputs = body.get("prompt"), body.get("messages"), body.get("input")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) > conf["MAX_PROMPTS"]:
            raise invalid_value(
                "prompt",
                f"this server accepts at most {conf['MAX_PROMPTS']} prompts per request (MAX_PROMPTS), "
                f"got {len(prompt)}.",
            )
    if isinstance(messages, list) and len(messages) > conf["MAX_MESSAGES"]:
        raise invalid_value(
            "messages",
            f"this server accepts at most {conf['MAX_MESSAGES']} messages per request (MAX_MESSAGES), "
            f"got {len(messages)}.",
        )
    limit = conf["MAX_INPUT_CHARS"]
    for param, value in (("prompt", prompt), ("messages", messages), ("input", inputs)):
        chars = text_chars(value)
        if chars > limit:
            raise invalid_value(
                param,
                f"the request holds {chars} characters of text; this server accepts at most {limit} (MAX_INPUT_CHARS).",
            )


def text_chars(value: Any) -> int:
    """Characters of text in a prompt, an input or messages (strings, and the text of
    content parts); token ids and other shapes count nothing here."""
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, list):
        return 0
    total = 0
    for item in value:
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            content = item.get("content")
            if isinstance(content, str):
                total += len(content)
            elif isinstance(content, list):
                total += sum(len(part["text"]) for part in content
                             if isinstance(part, dict) and isinstance(part.get("text"), str))
    return total
