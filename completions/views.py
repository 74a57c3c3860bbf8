"""Thin async views: validate, find the model, then the endpoint's serving plans, admits
and answers (JSON or SSE); an upstream row's request is forwarded by the same serving."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from completions.serving import Serving
from completions.serving_chat import chat
from completions.serving_completion import completion
from core import usage
from core.http import sse_response
from core.validation import avalidated
from models_api.models import ModelEntry
from models_api.selectors import aentry_for


async def _serve(request: HttpRequest, serving: Serving) -> HttpResponse:
    data = await avalidated(request, serving.serializer_class)
    entry = await aentry_for(request, data["model"], task=ModelEntry.Task.TEXT_GENERATION)
    used = usage.of(request)
    if entry.is_upstream:
        return await serving.forward(request, data, entry, used)
    plan = await serving.plan(data, entry, used)
    await serving.admit(request, plan)
    if plan.stream:
        return sse_response(await serving.stream(plan))
    return JsonResponse(await serving.run(plan))


@csrf_exempt
@require_POST
async def create_completion(request: HttpRequest) -> HttpResponse:
    return await _serve(request, completion)


@csrf_exempt
@require_POST
async def create_chat_completion(request: HttpRequest) -> HttpResponse:
    return await _serve(request, chat)
