"""Reading what an upstream server sends, within bounds.

Every answer is read from the raw body (answers are asked uncompressed, and a compressed
one is refused before its body is read), so what the gateway holds is what it counted:
a JSON answer at most ``UPSTREAM_MAX_RESPONSE_BYTES``, a stream at most that much per
line and per event (a stream as a whole is relayed as it comes, so it may be longer).
Past the cap the read stops at once with :class:`TooLarge`; the rest is never read.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
from django.conf import settings

_EOL = re.compile(rb"\r\n|\r|\n")


class TooLarge(Exception):
    """The answer (or one stream line or event) is over ``UPSTREAM_MAX_RESPONSE_BYTES``."""


def max_bytes() -> int:
    return int(settings.GPT3DEV["UPSTREAM_MAX_RESPONSE_BYTES"])


def encoding_problem(response: httpx.Response) -> str | None:
    """Why the answer's body cannot be read within bounds (it is compressed), or None."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    return f"the answer is compressed (Content-Encoding: {encoding[:40]}) although identity was asked for"


async def read_body(response: httpx.Response) -> bytes:
    """The whole body, or TooLarge as soon as it is over the cap."""
    cap = max_bytes()
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > cap:
        raise TooLarge(f"the answer announces {length} bytes")
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > cap:
            raise TooLarge(f"the answer is over {cap} bytes")
    return bytes(body)


async def sse_events(response: httpx.Response) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined by newlines); a
    line or event over the cap is TooLarge. Lines end with CRLF, LF or CR, as the SSE
    specification says."""
    cap = max_bytes()
    buffer = bytearray()
    data: list[str] = []
    size = 0

    def take(line: bytes) -> str | None:
        """Handle one line; the event's data when the line ends an event."""
        nonlocal data, size
        if not line:
            if not data:
                return None
            event, data, size = "\n".join(data), [], 0
            return event
        if line.startswith(b":"):
            return None
        name, _, value = line.partition(b":")
        if name == b"data":
            size += len(value)
            if size > cap:
                raise TooLarge(f"a stream event is over {cap} bytes")
            text = value.decode("utf-8", errors="replace")
            data.append(text[1:] if text.startswith(" ") else text)
        return None

    async for chunk in response.aiter_raw():
        buffer += chunk
        start = 0
        while (end := _EOL.search(buffer, start)) is not None:
            if end.group() == b"\r" and end.end() == len(buffer):
                break  # a CR that ends the chunk: its LF may come next
            event = take(bytes(buffer[start:end.start()]))
            start = end.end()
            if event is not None:
                yield event
        del buffer[:start]
        if len(buffer) > cap:
            raise TooLarge(f"a stream line is over {cap} bytes")
    if buffer:
        event = take(bytes(buffer).rstrip(b"\r"))
        if event is not None:
            yield event
    if data:
        yield "\n".join(data)


def chunk_problem(obj: Any) -> str | None:
    """Why a parsed stream event is not a chunk we can relay, or None."""
    if not isinstance(obj, dict):
        return "a stream event is not a JSON object"
    choices = obj.get("choices")
    if choices is not None and not (isinstance(choices, list) and all(isinstance(c, dict) for c in choices)):
        return "a stream event's choices are not a list of objects"
    for choice in choices or ():
        delta = choice.get("delta")
        if delta is not None and not isinstance(delta, dict):
            return "a stream event's delta is not an object"
    usage = obj.get("usage")
    if usage is not None and not isinstance(usage, dict):
        return "a stream event's usage is not an object"
    return None
