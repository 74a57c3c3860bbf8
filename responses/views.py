"""Thin async views of the Responses API: create (JSON, SSE or background), retrieve,
delete, cancel, list input items, and count input tokens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from completions.serving_chat import render_prompt, require_template
from core import usage
from core.errors import APIError, validation_error
from core.http import sse_response
from core.validation import avalidated
from models_api.engine import aload_model
from models_api.models import ModelEntry
from models_api.selectors import aentry_for
from responses import background, forwarding, services, store
from responses.events import event_frame
from responses.models import StoredResponse
from responses.serializers import InputTokensRequestSerializer, ListQuerySerializer, ResponseRequestSerializer
from responses.translate import chat_data, rename_error
from upstream import forward


def _not_found(response_id: str) -> APIError:
    return APIError(404, f"No response found with id '{response_id}'.", param="response_id", code="not_found")


async def _owned(request: HttpRequest, response_id: str) -> StoredResponse:
    owner, _ = store.owner_of(request)
    row = await sync_to_async(store.get_owned)(owner, response_id)
    if row is None:
        raise _not_found(response_id)
    return row


async def _sse(events: AsyncIterator[dict]) -> AsyncIterator[bytes]:
    async for event in services.numbered(events):
        yield event_frame(event)


@csrf_exempt
@require_POST
async def create_response(request: HttpRequest) -> HttpResponse:
    data = await avalidated(request, ResponseRequestSerializer)
    entry = await aentry_for(request, data["model"], task=ModelEntry.Task.TEXT_GENERATION)
    used = usage.of(request)
    if entry.is_upstream:
        return await forwarding.forward_response(request, data, entry, used)
    if data.get("background"):
        job = await services.prepare(request, data, entry, services.background_usage(used))
        await services.admit(request, job)
        body = services.response_object(job, "queued")
        background.reserve(job.id)
        try:
            await sync_to_async(store.save)(services.new_row(job, body))
        except BaseException:
            background.release(job.id)
            raise
        background.start(job)
        return JsonResponse(body)
    job = await services.prepare(request, data, entry, used)
    await services.admit(request, job)
    if data.get("stream"):
        streams = await services.open_streams(job)  # opened now, so refusals are HTTP statuses
        return sse_response(_sse(services.generate(job, streams)))
    return JsonResponse(await services.run(job))


@csrf_exempt
@require_http_methods(["GET", "DELETE"])
async def response_detail(request: HttpRequest, response_id: str) -> HttpResponse:
    row = await _owned(request, response_id)
    if request.method == "DELETE":
        if row.status in StoredResponse.UNFINISHED:
            background.cancel_local(row.id)
        await row.adelete()
        return JsonResponse({"id": response_id, "object": "response", "deleted": True})
    if request.GET.get("stream") in ("true", "1"):
        raise APIError(400, "Streaming a stored response again is not supported; GET it without stream.",
                       param="stream")
    return JsonResponse(row.body)


@csrf_exempt
@require_POST
async def cancel_response(request: HttpRequest, response_id: str) -> HttpResponse:
    row = await _owned(request, response_id)
    if not row.background:
        raise APIError(400, "Only responses created with background=true can be cancelled.", param="response_id")
    if row.status in StoredResponse.UNFINISHED:
        body = row.body | {"status": "cancelled", "usage": row.body.get("usage")}
        updated = await StoredResponse.objects.filter(pk=row.pk, status__in=StoredResponse.UNFINISHED).aupdate(
            status=StoredResponse.Status.CANCELLED, body=body)
        background.cancel_local(row.id)
        if updated:
            return JsonResponse(body)
        row = await _owned(request, response_id)
    return JsonResponse(row.body)


@csrf_exempt
@require_GET
async def input_items(request: HttpRequest, response_id: str) -> HttpResponse:
    row = await _owned(request, response_id)
    query = ListQuerySerializer(data=request.GET.dict() | {"include": request.GET.getlist("include")})
    if not query.is_valid():
        raise validation_error(query.errors)
    args = query.validated_data
    items = list(row.input_items)
    if args["order"] == "desc":
        items.reverse()
    if args.get("after"):
        ids = [item.get("id") for item in items]
        if args["after"] not in ids:
            raise APIError(400, f"Invalid value for 'after': no input item '{args['after']}' in this response.",
                           param="after")
        items = items[ids.index(args["after"]) + 1:]
    page = items[: args["limit"]]
    return JsonResponse({
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > len(page),
    })


@csrf_exempt
@require_POST
async def count_input_tokens(request: HttpRequest) -> HttpResponse:
    data = await avalidated(request, InputTokensRequestSerializer)
    entry = await aentry_for(request, data["model"], task=ModelEntry.Task.TEXT_GENERATION)
    if entry.is_upstream:
        status, answer = await forward.forward_json(entry, "/responses/input_tokens", request.openai_body,
                                                    forward.incoming_hops(request))
        return JsonResponse(answer, status=status)
    owner, _ = store.owner_of(request)
    history = await services.replayed(owner, data.get("previous_response_id"))
    items = services.normalise_input(data["input"]) if data.get("input") is not None else []
    services.require_chat(entry)
    generator = await aload_model(entry)
    require_template(generator, entry)
    try:
        cdata = chat_data(data, history, items)
        ids = await asyncio.to_thread(render_prompt, generator, cdata)
    except APIError as exc:
        raise rename_error(exc) from None
    return JsonResponse({"object": "response.input_tokens", "input_tokens": len(ids)})
