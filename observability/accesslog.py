"""One access-log line and the request metrics per request, written at its real end.

The middleware is the outermost one: it gives every request an id (the client's
``X-Request-ID`` when it sends a sane one), a :class:`RequestRecord` (id, method, path,
status) and an empty :class:`core.usage.Usage` on ``request.usage`` that the auth
middleware, views and services fill in (key, model, tokens, TTFT). For a streaming
answer it wraps the body so that the request ends when the last byte is sent (or the
client goes away); then the usage's consumers run (:func:`core.usage.finish`: the rate
limiter's settlement, the metrics, the usage ledger) and the line is written from the
same usage.

A request whose client went away (the view cancelled, or a stream closed before its
end) is logged and counted with status 499, nginx's "client closed request": not a 5xx
that pages anyone, and not a 200 for a stream that was cut off.

``ACCESS_LOG_FORMAT``: ``plain`` (key=value), ``json`` (one object per line) or ``off``.
Prompts are never logged unless ``ACCESS_LOG_PROMPTS=1``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, resolve

from core import usage as usage_record
from core.middleware import DualModeMiddleware
from core.requestcontext import RequestRecord, set_current_record
from core.usage import CLIENT_CLOSED_REQUEST, Usage
from observability import memory, metrics

access_logger = logging.getLogger("gpt3dev.access")
logger = logging.getLogger("gpt3dev.request")

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

__all__ = ["CLIENT_CLOSED_REQUEST", "AccessLogMiddleware", "gone_status", "log_early_answer", "request_id_from"]


def gone_status() -> int:
    """The status of a request cut short: 499 when its client left, 503 when the server's
    shutdown grace ran out and cancelled it."""
    from core.lifecycle import is_draining

    return 503 if is_draining() else CLIENT_CLOSED_REQUEST


def request_id_from(sent: str) -> str:
    """The client's X-Request-ID when it is sane, else a new one."""
    return sent if REQUEST_ID_RE.match(sent) else f"req_{uuid.uuid4().hex}"


def log_early_answer(scope: dict[str, Any], status: int, started: float) -> str:
    """Log and count an answer given in front of Django (an ASGI wrapper refused the
    request before its body was read); returns the request id it was given."""
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", ())}
    record = RequestRecord(
        request_id=request_id_from(headers.get("x-request-id", "")),
        method=scope.get("method", ""),
        path=scope.get("path", ""),
        started=started,
        status=status,
    )
    try:
        route = resolve(record.path).url_name or "unmatched"
    except Resolver404:
        route = "unmatched"
    seconds = time.monotonic() - started
    metrics.request_finished(route=route, model="", status=status, seconds=seconds)
    _log_line(record, Usage(endpoint=route, status=status), None, seconds)
    return record.request_id


def _route(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    if match is not None and match.url_name:
        return match.url_name
    return "unmatched"  # unknown paths share one label: no unbounded label values


def _finish(request: HttpRequest, record: RequestRecord) -> None:
    """Synchronous end-of-request work: the usage's consumers (may touch the database),
    the request metrics, the log line."""
    if record.finished:
        return
    record.finished = True
    route = _route(request)
    used = usage_record.of(request)
    used.endpoint, used.status = used.endpoint or route, record.status
    used.path = record.path
    usage_record.finish(used)
    seconds = time.monotonic() - record.started
    if route != "metrics":
        metrics.request_finished(route=route, model=used.model or "", status=record.status, seconds=seconds)
    metrics.IN_FLIGHT.dec()
    _log_line(record, used, _asked(request), seconds)
    memory.after_request(_content_length(request))


def _asked(request: HttpRequest) -> dict[str, Any]:
    """The parsed JSON body (validation keeps it on the request), or what the route names."""
    body = getattr(request, "openai_body", None)
    if isinstance(body, dict):
        return body
    match = getattr(request, "resolver_match", None)
    return {"model": match.kwargs.get("model_id")} if match is not None else {}


def _content_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _log_line(record: RequestRecord, used: Usage, asked: dict[str, Any] | None, seconds: float) -> None:
    fmt = settings.GPT3DEV["ACCESS_LOG_FORMAT"]
    if fmt == "off":
        return
    asked = asked or {}
    model = used.model or (asked["model"][:128] if isinstance(asked.get("model"), str) else None)
    fields: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "request_id": record.request_id,
        "method": record.method,
        "path": record.path,
        "status": record.status,
        "key": used.key_name,
        "model": model,
        "prompt_tokens": used.input_tokens,
        "completion_tokens": None if used.input_tokens is None else used.output_tokens,
        "ttft_ms": None if used.ttft is None else round(used.ttft * 1000, 1),
        "duration_ms": round(seconds * 1000, 1),
    }
    if settings.GPT3DEV["ACCESS_LOG_PROMPTS"]:
        prompt = next((asked[name] for name in ("messages", "prompt", "input") if name in asked), None)
        if prompt is not None:
            fields["prompt"] = prompt
    if fmt == "json":
        # ASCII-only: control characters, ANSI escapes, DEL, C1 controls and Unicode line
        # separators from a client all become \uXXXX escapes, so one request is one line.
        line = json.dumps(fields, ensure_ascii=True, default=str)
    else:
        line = " ".join(
            f"{name}={_plain(value)}" for name, value in fields.items() if value is not None or name in ("key", "model")
        )
    access_logger.info(line)


# A plain value is written bare only when it is made of these characters; anything else
# (a space, a quote, '=', a control character, an ANSI escape, non-ASCII text) is written
# as a JSON string, so a client can never split a line or forge a field.
_BARE = re.compile(r"[A-Za-z0-9._:/@+%,~-]+")


def _plain(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    if isinstance(value, str) and _BARE.fullmatch(value):
        return value
    return json.dumps(value, ensure_ascii=True, default=str)


class AccessLogMiddleware(DualModeMiddleware):
    def _start(self, request: HttpRequest) -> RequestRecord:
        record = RequestRecord(request_id=request_id_from(request.headers.get("X-Request-ID", "")),
                               method=request.method or "", path=request.path)
        request.record = record
        request.usage = Usage(started=record.started)
        set_current_record(record)
        metrics.IN_FLIGHT.inc()
        return record

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        record = self._start(request)
        try:
            response = self.get_response(request)
        except BaseException:
            record.status = 500
            _finish(request, record)
            raise
        return self._respond(request, record, response, sync=True)

    async def __acall__(self, request: HttpRequest):
        record = self._start(request)
        try:
            response = await self.get_response(request)
        except asyncio.CancelledError:
            # Django cancels the view when the client goes away: not a server error.
            record.status = gone_status()
            await _afinish(request, record)
            raise
        except BaseException:
            record.status = 500
            await _afinish(request, record)
            raise
        if not response.streaming:
            await _afinish(request, self._stamp(record, response))
            return response
        return self._respond(request, record, response, sync=False)

    @staticmethod
    def _stamp(record: RequestRecord, response: HttpResponseBase) -> RequestRecord:
        record.status = response.status_code
        response["X-Request-ID"] = record.request_id
        return record

    def _respond(self, request: HttpRequest, record: RequestRecord, response: HttpResponseBase, *, sync: bool):
        self._stamp(record, response)
        if not response.streaming:
            _finish(request, record)
            return response
        if getattr(response, "is_async", False):
            response.streaming_content = _async_until_end(response.streaming_content, request, record)
        else:
            response.streaming_content = _sync_until_end(response.streaming_content, request, record)
        return response


async def _async_until_end(content: AsyncIterator[bytes], request: HttpRequest, record: RequestRecord):
    try:
        async for chunk in content:
            yield chunk
    except (asyncio.CancelledError, GeneratorExit):
        record.status = gone_status()  # the client left mid-stream
        raise
    finally:
        # The client may have gone away (this generator is being closed): the line is
        # still written, and the database work runs on its own thread.
        try:
            await _afinish(request, record)
        except BaseException:
            _finish_later(request, record)


async def _afinish(request: HttpRequest, record: RequestRecord) -> None:
    """_finish from async code: on a thread when a consumer may touch the database."""
    if usage_record.needs_thread(usage_record.of(request)):
        await sync_to_async(_finish)(request, record)
    else:
        _finish(request, record)


def _finish_later(request: HttpRequest, record: RequestRecord) -> None:
    import threading

    from django.db import connection

    def work() -> None:
        try:
            _finish(request, record)
        finally:
            connection.close()  # this thread's own connection

    threading.Thread(target=work, daemon=True).start()


def _sync_until_end(content, request: HttpRequest, record: RequestRecord):
    try:
        yield from content
    except GeneratorExit:
        record.status = gone_status()
        raise
    finally:
        _finish(request, record)
