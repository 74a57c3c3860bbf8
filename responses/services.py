"""Serving ``POST /v1/responses``: a request becomes chat's :class:`Plan` (see
:mod:`responses.translate`), runs on the engine, and is answered as a Response object,
an event stream, or (``background``) a stored row that a server-side task fills.

One generator, :func:`generate`, produces the events; a plain answer keeps only the
last one's ``response``, so the two forms always agree. A stored response is written
before its final event is sent, so a client that reads it back right away finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from access.ratelimit import areserve_tokens
from completions import engine_io
from completions.serving import Plan, open_plan
from completions.serving_chat import chat, require_chat
from core import usage as usage_record
from core.errors import APIError, invalid_value
from core.usage import Usage
from models_api.models import ModelEntry
from observability.metrics import GenerationTimer
from responses import store
from responses.events import OutputWriter
from responses.items import new_id, normalise_input
from responses.models import StoredResponse
from responses.translate import chat_data, logprobs_wanted, rename_error


@dataclass
class Job:
    """One validated Responses request, planned for the engine."""

    data: dict[str, Any]
    entry: ModelEntry
    plan: Plan
    items: list[dict[str, Any]]  # this request's input items, as stored
    history: list[dict[str, Any]]  # the items replayed from previous_response_id
    owner: str
    owner_name: str
    id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))

    @property
    def store(self) -> bool:
        return self.data.get("store") is not False

    @property
    def background(self) -> bool:
        return bool(self.data.get("background"))


# --------------------------------------------------------------------- planning
async def plan_chat(data: dict[str, Any], entry: ModelEntry, used: Usage) -> Plan:
    """Chat's planning of the translated request, its errors in the Responses' words."""
    require_chat(entry)
    try:
        return await chat.plan(data, entry, used)
    except APIError as exc:
        raise rename_error(exc) from None


async def replayed(owner: str, previous_id: str | None) -> list[dict[str, Any]]:
    """The conversation a ``previous_response_id`` continues: its history, input and output."""
    if not previous_id:
        return []
    row = await sync_to_async(store.get_owned)(owner, previous_id)
    if row is None:
        raise APIError(400, f"Previous response with id '{previous_id}' not found.",
                       param="previous_response_id", code="previous_response_not_found")
    if row.status in StoredResponse.UNFINISHED:
        raise invalid_value("previous_response_id",
                            f"the response '{previous_id}' has not finished yet ({row.status}).")
    return list(row.context) + list(row.input_items) + list(row.body.get("output") or [])


async def prepare(request, data: dict[str, Any], entry: ModelEntry, used: Usage) -> Job:
    owner, owner_name = store.owner_of(request)
    history = await replayed(owner, data.get("previous_response_id"))
    items = normalise_input(data["input"]) if data.get("input") is not None else []
    if not items and not history:
        raise invalid_value("input", "must hold at least one message.")
    plan = await plan_chat(chat_data(data, history, items), entry, used)
    return Job(data=data, entry=entry, plan=plan, items=items, history=history, owner=owner, owner_name=owner_name)


async def admit(request, job: Job) -> None:
    """Server caps and the key's tokens-per-minute, as on chat."""
    plan = job.plan
    limit = settings.GPT3DEV["MAX_PROMPT_TOKENS"]
    if limit and plan.prompt_tokens > limit:
        raise APIError(400, f"The input has {plan.prompt_tokens} tokens; this server accepts at most {limit} "
                            "prompt tokens per request.", param="input", code="prompt_too_long")
    await areserve_tokens(request, plan.prompt_tokens + plan.sampling.max_tokens, param="max_output_tokens")


async def open_streams(job: Job) -> list[engine_io.PrimedStream]:
    try:
        streams = await open_plan(job.plan, param="input")
    except APIError as exc:
        raise rename_error(exc) from None
    job.plan.used.read(job.entry.model_id, job.plan.prompt_tokens)
    return streams


# ------------------------------------------------------------------ the object
def _echoed_tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for tool in tools or []:
        if tool.get("type") == "function":
            out.append({"type": "function", "name": tool["name"], "description": tool.get("description"),
                        "parameters": tool.get("parameters"), "strict": tool.get("strict", True)})
        else:
            out.append(tool)
    return out


def response_object(job: Job, status: str, output: list[dict[str, Any]] | None = None, *,
                    usage: dict[str, Any] | None = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    data, sampling = job.data, job.plan.sampling
    text = data.get("text") if isinstance(data.get("text"), dict) else {}
    fmt = text.get("format") or {"type": "text"}
    optional = {name: data[name] for name in ("user", "prompt_cache_key", "safety_identifier") if data.get(name)}
    return optional | {
        "id": job.id,
        "object": "response",
        "created_at": job.created_at,
        "status": status,
        "background": job.background,
        "completed_at": int(time.time()) if status in ("completed", "incomplete", "failed", "cancelled") else None,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": data.get("instructions"),
        "max_output_tokens": data.get("max_output_tokens"),
        "max_tool_calls": data.get("max_tool_calls"),
        "model": job.entry.model_id,
        "output": output or [],
        "parallel_tool_calls": data.get("parallel_tool_calls") is not False,
        "previous_response_id": data.get("previous_response_id") or None,
        "reasoning": data.get("reasoning") if isinstance(data.get("reasoning"), dict) else None,
        "service_tier": "default",
        "store": job.store,
        "temperature": sampling.temperature,
        "text": {"format": fmt} | ({"verbosity": text["verbosity"]} if text.get("verbosity") else {}),
        "tool_choice": data.get("tool_choice") if data.get("tool_choice") is not None else "auto",
        "tools": _echoed_tools(data.get("tools")),
        "top_logprobs": data.get("top_logprobs") or 0,
        "top_p": sampling.top_p,
        "truncation": data.get("truncation") or "disabled",
        "metadata": data.get("metadata") or {},
    } | ({"usage": usage} if usage is not None else {})


def usage_body(input_tokens: int, output_tokens: int, cached: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def new_row(job: Job, body: dict[str, Any]) -> StoredResponse:
    return StoredResponse(
        id=job.id, owner=job.owner, owner_name=job.owner_name, model=job.entry.model_id, status=body["status"],
        background=job.background, previous_response_id=job.data.get("previous_response_id") or "",
        created_at=timezone.now(), worker=store.WORKER if job.background else "", body=body,
        input_items=job.items, context=job.history,
    )


async def keep(job: Job, body: dict[str, Any]) -> None:
    """Store a finished response (``store: true``)."""
    if not job.store:
        return
    if job.background:
        await sync_to_async(store.finish)(job.id, body, background=True)
    else:
        await sync_to_async(store.save)(new_row(job, body))


# -------------------------------------------------------------------- generation
async def generate(job: Job, streams: list[engine_io.PrimedStream], *,
                   stop_check=None) -> AsyncIterator[dict[str, Any]]:
    """The response's events, the last one ``response.completed``, ``.incomplete`` or
    ``.failed`` carrying the whole response (stored before it is yielded).
    ``stop_check()`` (background) is awaited about once a second; True stops early."""
    plan = job.plan
    writer = OutputWriter(plan.tools, logprobs_wanted(job.data), job.data.get("max_tool_calls"))
    timer = GenerationTimer(plan.used)
    yield {"type": "response.created", "response": response_object(job, "in_progress")}
    yield {"type": "response.in_progress", "response": response_object(job, "in_progress")}
    finish_reason, output_tokens, cached = None, 0, 0
    checked = time.monotonic()
    try:
        async with contextlib.aclosing(engine_io.merge(streams)) as deltas:
            async for _, delta in deltas:
                if delta.cached_tokens is not None:
                    cached = delta.cached_tokens
                timer.tokens(len(delta.token_ids))
                output_tokens += len(delta.token_ids)
                writer.feed(delta)
                for event in writer.take():
                    yield event
                if delta.finish_reason is not None:
                    finish_reason = delta.finish_reason
                    break
                if writer.ended:
                    finish_reason = "stop"
                    break
                if stop_check is not None and time.monotonic() - checked > 1.0:
                    checked = time.monotonic()
                    if await stop_check():
                        return
    except asyncio.CancelledError:
        raise  # the client went away (or a background cancel): merge() cancelled the request
    except Exception as exc:
        error = engine_io.engine_failure(exc)
        timer.done()
        body = response_object(job, "failed", writer.output, error={"code": "server_error", "message": error.message})
        await keep(job, body)
        yield {"type": "response.failed", "response": body, "_error": error}
        return
    timer.done()
    plan.used.cached_tokens = cached
    status = "incomplete" if finish_reason == "length" else "completed"
    writer.finish(status)
    for event in writer.take():
        yield event
    body = response_object(job, status, writer.output, usage=usage_body(plan.prompt_tokens, output_tokens, cached))
    await keep(job, body)
    yield {"type": f"response.{status}", "response": body}


def numbered(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    async def run() -> AsyncIterator[dict[str, Any]]:
        sequence = 0
        async for event in events:
            event.pop("_error", None)
            yield event | {"sequence_number": sequence}
            sequence += 1

    return run()


async def run(job: Job) -> dict[str, Any]:
    """The whole answer as one Response object."""
    streams = await open_streams(job)
    last: dict[str, Any] = {}
    async with contextlib.aclosing(generate(job, streams)) as events:
        async for event in events:
            last = event
    if last.get("type") == "response.failed":
        raise last["_error"]
    return last["response"]


def background_usage(used: Usage) -> Usage:
    """A background response's own usage record (the request's ends with its answer)."""
    return Usage(endpoint=used.endpoint or "responses", model=used.model, key_name=used.key_name, key_id=used.key_id)


async def finish_usage(used: Usage, status: int) -> None:
    used.status = status
    if usage_record.needs_thread(used):
        await sync_to_async(usage_record.finish)(used)
    else:
        usage_record.finish(used)
