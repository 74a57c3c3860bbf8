"""Forward a validated request to an upstream server and answer in our contract.

The request has already passed every layer of ours (key, per-key models, RPM/TPM,
``MAX_*`` caps, the serializers); the body sent upstream is the client's own, with
``model`` set to the upstream's name for it and, on a stream, ``stream_options.
include_usage`` always on (the usage is what rate limits and metrics count; it is
stripped again when the client did not ask for it).

Failover: a server that cannot be reached, does not begin its answer within the row's
timeout (a non-streaming answer: does not finish it), answers 3xx or 5xx, answers
malformed JSON or a compressed body, or ends a stream before its first event is counted
as failed and the next server is tried, until every server of the row has been tried;
then the answer is a 503 with ``Retry-After`` that names the row (the servers' own
errors go to the log and ``/readyz``). Once the first byte has gone to the client
nothing is retried: a failure mid-stream (cut off, no event within the timeout, a
malformed or oversized event) becomes an error frame and ``[DONE]``.

Normalised on the way back: ``model`` is the id the client asked for; errors get
OpenAI's shape, with only a recognised message passed on and credentials redacted
(:mod:`upstream.errors`); answers are bounded (:mod:`upstream.reading`); a stream
missing ``[DONE]`` gets one. A client that goes away closes the upstream connection,
so the upstream aborts the generation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings
from django.http import HttpResponse, JsonResponse

from core.errors import APIError, error_payload
from core.http import SSE_DONE, sse_frame, sse_response
from core.requestcontext import current_record
from core.usage import Usage
from observability import metrics
from upstream.errors import normalised_error, redact
from upstream.pool import Pool, Server, describe, http_client, pool_for
from upstream.reading import TooLarge, chunk_problem, encoding_problem, max_bytes, read_body, sse_events

__all__ = ["check_hops", "completion_json", "completion_stream", "embeddings_json", "forward_json", "incoming_hops",
           "normalised_error", "upstream_body"]

logger = logging.getLogger("gpt3dev.upstream")

RETRYABLE_STATUS = 500  # this status and above: try another server
HOPS_HEADER = "X-Gpt3dev-Hops"  # gateways a request has passed through
MAX_HOPS = 4  # more: the registry rows forward in a circle
LOOP_STATUS = 508  # "Loop Detected": passed back as it is, never retried elsewhere
ROOM_POLL_SECONDS = 0.01  # how often a request waiting under the concurrency cap looks again
MAX_USAGE_TOKENS = 2**31 - 1  # a reported usage above this is not believed (kept: the reservation)


class _Failed(Exception):
    """One server failed before anything reached the client (try the next)."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason, self.error = reason, error


# ------------------------------------------------------------------------- helpers
def upstream_body(pool: Pool, body: dict[str, Any], *, stream: bool, ask_usage: bool = True) -> bytes:
    """The body sent upstream: the client's, under the upstream's model name, asking
    for usage on a chat or completions stream (``ask_usage``; a Responses stream
    reports it in its last event anyway)."""
    sent = dict(body)
    sent["model"] = pool.upstream_model
    if stream and ask_usage:
        sent["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return json.dumps(sent, separators=(",", ":"), ensure_ascii=False).encode()


def _answer(status: int, body: dict[str, Any]) -> JsonResponse:
    """A JSON answer as the upstream gave it (an error already in OpenAI's shape)."""
    response = JsonResponse(body, status=status)
    response.openai_error = status >= 400  # the middleware leaves it alone
    return response


def _is_error(obj: dict[str, Any]) -> bool:
    return "error" in obj or obj.get("object") == "error"


def _secrets(pool: Pool) -> tuple[str, ...]:
    """The row's own key, to be redacted from anything an upstream sends back."""
    value = pool.headers().get("Authorization", "")
    return (value.removeprefix("Bearer "),) if value else ()


def _unavailable(pool: Pool, why: str) -> APIError:
    retry = max(1, math.ceil(float(settings.GPT3DEV["UPSTREAM_HEALTH_INTERVAL"])))
    return APIError(
        503,
        f"The model '{pool.model_id}' is unavailable: {why}. Retry later.",
        code="upstream_unavailable",
        headers={"Retry-After": str(retry)},
    )


def _too_large(pool: Pool) -> APIError:
    return APIError(
        502,
        f"The upstream server of model '{pool.model_id}' sent an answer larger than this gateway accepts "
        f"(UPSTREAM_MAX_RESPONSE_BYTES, {max_bytes()} bytes).",
        type="server_error",
        code="upstream_response_too_large",
    )


def check_hops(pool_model_id: str, hops: int) -> None:
    """Refuse a request that has already gone through ``MAX_HOPS`` gateways: upstream
    rows that point back at each other (or at themselves) would forward it forever."""
    if hops >= MAX_HOPS:
        raise APIError(
            LOOP_STATUS,
            f"The model '{pool_model_id}' forwards in a loop: this request has already passed through {hops} "
            "gateways. Check the upstream URLs of its registry row.",
            type="server_error",
            code="upstream_loop",
        )


def incoming_hops(request) -> int:
    try:
        return max(0, int(request.headers.get(HOPS_HEADER, "0")))
    except ValueError:
        return 0


def _request_headers(pool: Pool, hops: int) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "Accept-Encoding": "identity", HOPS_HEADER: str(hops + 1)}
    record = current_record()
    if record is not None:
        headers["X-Request-ID"] = record.request_id
    return headers | pool.headers()


async def _choose(pool: Pool, tried: set[str], deadline: float) -> Server:
    """The next server to try; waits (until ``deadline``) while every healthy server is
    at the concurrency cap; a 503 when none is left."""
    while True:
        server = pool.pick(tried)
        if server is not None:
            return server
        if not pool.waiting_for_room(tried):
            if tried:
                raise _unavailable(pool, "every upstream server failed")
            raise _unavailable(pool, "every upstream server is failing its health checks")
        if time.monotonic() >= deadline:
            raise _unavailable(pool, "every upstream server is at its concurrency cap")
        await asyncio.sleep(ROOM_POLL_SECONDS)


async def _send(pool: Pool, server: Server, path: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
    """Send one request, the answer's head read; a failure before the head is _Failed.
    A 4xx answer is returned; a 3xx or 5xx answer, or a compressed one, is _Failed."""
    client = http_client()
    request = client.build_request("POST", f"{server.url}{path}", content=content, headers=headers,
                                   timeout=pool.timeouts())
    try:
        response = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise _Failed(_reason(exc), describe(exc)) from None
    status = response.status_code
    reason, problem = "status", None
    if 300 <= status < 400:
        problem = f"HTTP {status} (a redirect: upstream redirects are not followed)"
    elif status >= RETRYABLE_STATUS and status != LOOP_STATUS:
        problem = f"HTTP {status}"
        try:  # the server's own words, for the log and /readyz only
            message = normalised_error(json.loads(await read_body(response)), status)["error"]["message"]
            problem += f": {redact(message, _secrets(pool))[:300]}"
        except (httpx.HTTPError, ValueError, TooLarge):
            pass
    elif encoding_problem(response):
        reason, problem = "malformed", encoding_problem(response)
    if problem:
        await response.aclose()
        raise _Failed(reason, problem)
    return response


def _reason(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    return "timeout" if isinstance(exc, httpx.TimeoutException) else "read"


async def _with_failover(pool: Pool, path: str, body: dict[str, Any], *, stream: bool, prime, hops: int,
                         ask_usage: bool = True):
    """Try the row's servers in turn until one answers: ``prime(response)`` reads what
    must come before our first byte (the JSON body, or a stream's first event) and
    raises _Failed to move on; sending and priming together get the row's timeout.
    Returns (server, response, primed)."""
    check_hops(pool.model_id, hops)
    pool.ensure_health_checks()
    content = upstream_body(pool, body, stream=stream, ask_usage=ask_usage)
    headers = _request_headers(pool, hops)
    deadline = time.monotonic() + pool.timeout
    tried: set[str] = set()
    while True:
        server = await _choose(pool, tried, deadline)
        tried.add(server.url)
        pool.begin(server)
        started = time.monotonic()
        response = None
        try:
            async with asyncio.timeout(pool.timeout):
                response = await _send(pool, server, path, content, headers)
                primed = await prime(response)
        except (_Failed, TimeoutError) as failure:
            if response is not None:
                await response.aclose()
            pool.end(server)
            if isinstance(failure, TimeoutError):
                failure = _Failed("timeout", f"no answer within the timeout ({pool.timeout:g} s)")
            pool.failed(server, failure.reason, failure.error)
            logger.warning("Upstream %s failed for %s: %s", server.url, pool.model_id, failure.error)
            continue
        except TooLarge as exc:  # the request's doing as much as the server's: no failover
            await response.aclose()
            pool.end(server)
            pool.refused(server, "too_large", str(exc))
            logger.warning("Upstream %s answered too much for %s: %s", server.url, pool.model_id, exc)
            raise _too_large(pool) from None
        except BaseException:  # cancelled (the client left) or our own bug: free the slot
            if response is not None:
                await response.aclose()
            pool.end(server)
            raise
        pool.succeeded(server, time.monotonic() - started)
        return server, response, primed


def _rename(obj: dict[str, Any], model_id: str) -> dict[str, Any]:
    if "model" in obj:
        obj["model"] = model_id
    return obj


# --------------------------------------------------------------------- JSON answers
async def _read_json(response: httpx.Response) -> Any:
    """The answer's JSON (a 2xx answer must be an object); an error answer's body that is
    not JSON is None (it becomes a fixed message)."""
    try:
        raw = await read_body(response)
    except httpx.HTTPError as exc:
        raise _Failed(_reason(exc), describe(exc)) from None
    try:
        obj = json.loads(raw)
    except ValueError:
        if response.status_code < 300:
            raise _Failed("malformed", "the answer is not valid JSON") from None
        return None
    if response.status_code < 300 and not isinstance(obj, dict):
        raise _Failed("malformed", "the answer is not a JSON object")
    return obj


async def forward_json(entry, path: str, body: dict[str, Any], hops: int) -> tuple[int, dict[str, Any]]:
    """A non-streaming call: (status, body in our contract)."""
    pool = pool_for(entry)
    server, response, obj = await _with_failover(pool, path, body, stream=False, prime=_read_json, hops=hops)
    try:
        status = response.status_code
    finally:
        await response.aclose()
        pool.end(server)
    if status >= 300:
        return status, normalised_error(obj, status, secrets=_secrets(pool))
    return status, _rename(obj, entry.model_id)


async def relay_json(request, entry, path: str) -> HttpResponse:
    """The request's body as sent, answered by the row's servers at ``path`` and relayed
    as they answered (/tokenize, /rerank, /score: nothing to count)."""
    status, answer = await forward_json(entry, path, request.openai_body, incoming_hops(request))
    return _answer(status, answer)


def _usage_numbers(usage: Any) -> tuple[int, int] | None:
    """(prompt, completion) tokens of an upstream's usage, or None when absent or not
    believable (not integers, negative, or absurdly large)."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens", 0)
    for value in (prompt, completion):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_USAGE_TOKENS:
            return None
    return prompt, completion


async def completion_json(entry, path: str, body: dict[str, Any], used: Usage, hops: int = 0) -> HttpResponse:
    """/v1/completions or /v1/chat/completions without a stream; ``used`` gets the
    upstream's reported usage."""
    timer = metrics.GenerationTimer(used)
    status, answer = await forward_json(entry, path, body, hops)
    if status < 300:
        counts = _usage_numbers(answer.get("usage"))
        if counts is not None:
            timer.usage(*counts)
        else:
            timer.done()
    return _answer(status, answer)


async def embeddings_json(entry, body: dict[str, Any], used: Usage, hops: int = 0) -> HttpResponse:
    status, answer = await forward_json(entry, "/embeddings", body, hops)
    if status < 300:
        counts = _usage_numbers(answer.get("usage"))
        if counts is not None:
            used.read(entry.model_id, counts[0])
    return _answer(status, answer)


# -------------------------------------------------------------------------- streams
@dataclass
class _Primed:
    events: AsyncIterator[str]
    first: str | None  # None: the stream is an HTTP error answer (obj holds it)
    obj: Any = None


async def _prime_stream(response: httpx.Response) -> _Primed:
    if response.status_code >= 300:
        return _Primed(_empty(), None, await _read_json(response))
    events = sse_events(response)
    try:
        first = await anext(events)
    except StopAsyncIteration:
        raise _Failed("malformed", "the stream ended before its first event") from None
    except httpx.HTTPError as exc:
        raise _Failed(_reason(exc), describe(exc)) from None
    if first != "[DONE]":
        try:
            obj = json.loads(first)
        except ValueError:
            raise _Failed("malformed", "the stream's first event is not valid JSON") from None
        problem = chunk_problem(obj)
        if problem:
            raise _Failed("malformed", problem)
    return _Primed(events, first)


async def _empty() -> AsyncIterator[str]:
    return
    yield  # pragma: no cover - makes this an async generator


@dataclass
class EventStream:
    """An upstream's stream whose first event has arrived, for a relay of its own
    (/v1/responses): ``first``, then :meth:`next` until None; :meth:`close` frees the
    server's slot. Each event must come within the row's timeout of the one before."""

    first: str
    _pool: Pool
    _server: Server
    _response: httpx.Response
    _events: AsyncIterator[str]

    async def next(self) -> str | None:
        try:
            async with asyncio.timeout(self._pool.timeout):
                return await anext(self._events)
        except StopAsyncIteration:
            return None

    async def close(self) -> None:
        await self._response.aclose()
        self._pool.end(self._server)


async def open_event_stream(entry, path: str, body: dict[str, Any], hops: int = 0) -> EventStream | HttpResponse:
    """The row's servers' stream at ``path`` (failover until one sends its first event),
    or the HTTP error answer one of them gave (in OpenAI's shape, secrets redacted)."""
    pool = pool_for(entry)
    server, response, primed = await _with_failover(pool, path, body, stream=True, prime=_prime_stream, hops=hops,
                                                    ask_usage=False)
    if primed.first is None:
        await response.aclose()
        pool.end(server)
        return _answer(response.status_code, normalised_error(primed.obj, response.status_code, secrets=_secrets(pool)))
    return EventStream(primed.first, pool, server, response, primed.events)


async def completion_stream(entry, path: str, body: dict[str, Any], used: Usage, hops: int = 0) -> HttpResponse:
    """A streaming completion: the upstream's events relayed one by one."""
    pool = pool_for(entry)
    options = body.get("stream_options") or {}
    wants_usage = bool(options.get("include_usage") or options.get("continuous_usage_stats"))
    server, response, primed = await _with_failover(pool, path, body, stream=True, prime=_prime_stream, hops=hops)
    if primed.first is None:  # a 4xx answer: an HTTP error, no stream
        await response.aclose()
        pool.end(server)
        status = response.status_code
        return _answer(status, normalised_error(primed.obj, status, secrets=_secrets(pool)))
    return sse_response(_relay(entry, pool, server, response, primed, wants_usage, used))


async def _relay(entry, pool: Pool, server: Server, response: httpx.Response, primed: _Primed,
                 wants_usage: bool, used: Usage) -> AsyncIterator[bytes]:
    """The primed stream, event by event: each event must come within the row's timeout
    of the one before (however slowly its bytes drip), and be a chunk we can relay."""
    timer = metrics.GenerationTimer(used)
    usage: tuple[int, int] | None = None
    data: str = primed.first or "[DONE]"
    try:
        try:
            while data != "[DONE]":
                try:
                    obj = json.loads(data)
                except ValueError:
                    obj = None
                problem = chunk_problem(obj) if obj is not None else "a stream event is not valid JSON"
                if problem:
                    _fail_mid_stream(pool, server, "malformed", problem)
                    yield _stream_error(pool, "sent a malformed stream event")
                    break
                if _is_error(obj):
                    yield sse_frame(normalised_error(obj, 500, secrets=_secrets(pool)))
                    break
                counts = _usage_numbers(obj.get("usage"))
                if counts is not None:
                    usage = counts
                relay = True
                if not wants_usage:
                    obj.pop("usage", None)
                    relay = bool(obj.get("choices"))  # not the usage-only chunk nobody asked for
                if relay:
                    tokens = _new_tokens(obj)
                    if tokens:
                        timer.tokens(tokens)
                    yield sse_frame(_rename(obj, entry.model_id))
                try:
                    async with asyncio.timeout(pool.timeout):
                        data = await anext(primed.events)
                except StopAsyncIteration:
                    break
        except TimeoutError:  # events stopped coming (a drip of bytes does not count)
            _fail_mid_stream(pool, server, "timeout", f"no stream event within the timeout ({pool.timeout:g} s)")
            yield _stream_error(pool, f"failed mid-answer (no event within the {pool.timeout:g} s timeout)")
        except TooLarge as exc:
            pool.refused(server, "too_large", str(exc))
            logger.warning("Upstream %s sent too much for %s: %s", server.url, pool.model_id, exc)
            yield _stream_error(pool, f"sent a stream event larger than this gateway accepts "
                                      f"(UPSTREAM_MAX_RESPONSE_BYTES, {max_bytes()} bytes)")
        except httpx.HTTPError as exc:  # cut off, or stalled past the per-read timeout
            _fail_mid_stream(pool, server, _reason(exc), describe(exc))
            yield _stream_error(pool, f"failed mid-answer ({_public_reason(exc)})")
        except Exception:  # our own bug on what an upstream sent: still a proper end
            logger.exception("Relaying the stream of %s from %s failed", pool.model_id, server.url)
            pool.failed(server, "malformed", "relaying its stream failed")
            yield _stream_error(pool, "sent a stream this gateway could not relay")
        if usage is not None:
            timer.usage(*usage)
        else:
            timer.done()
        yield SSE_DONE
    finally:  # also when the client went away: closing the connection aborts the upstream
        await response.aclose()
        pool.end(server)


def _fail_mid_stream(pool: Pool, server: Server, reason: str, error: str) -> None:
    pool.failed(server, reason, error)
    logger.warning("Upstream %s failed mid-stream for %s: %s", server.url, pool.model_id, error)


def _public_reason(exc: httpx.HTTPError) -> str:
    """What a client is told about a failed read: a fixed phrase, never an exception's text."""
    if isinstance(exc, httpx.TimeoutException):
        return "no answer within the timeout"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        return "the connection closed mid-answer"
    return "the connection failed"


def _new_tokens(obj: dict[str, Any]) -> int:
    """Chunks that carry generated output (one token each, for TTFT and inter-token metrics)."""
    count = 0
    for choice in obj.get("choices") or ():
        delta = choice.get("delta") or {}
        if choice.get("text") or delta.get("content") or delta.get("tool_calls"):
            count += 1
    return count


def _stream_error(pool: Pool, what: str) -> bytes:
    message = f"The upstream server of model '{pool.model_id}' {what}."
    return sse_frame(error_payload(message, type="server_error", code="upstream_error"))
