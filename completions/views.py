"""Thin async views: validate -> plan -> run (JSON) or stream (SSE)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from completions import services
from completions.serializers import ChatCompletionRequestSerializer, CompletionRequestSerializer
from gpt3dev.http import sse_response
from gpt3dev.views_api import validated
from models_api.models import ModelEntry
from models_api.selectors import aget_served_entry


async def _answer(plan: services.Plan) -> HttpResponse:
    if plan.stream:
        return sse_response(await services.start_stream(plan))
    return JsonResponse(await services.run(plan))


@csrf_exempt
@require_POST
async def create_completion(request: HttpRequest) -> HttpResponse:
    data = validated(request, CompletionRequestSerializer)
    entry = await aget_served_entry(data["model"], task=ModelEntry.Task.TEXT_GENERATION)
    return await _answer(await services.plan_completion(data, entry))


@csrf_exempt
@require_POST
async def create_chat_completion(request: HttpRequest) -> HttpResponse:
    data = validated(request, ChatCompletionRequestSerializer)
    entry = await aget_served_entry(data["model"], task=ModelEntry.Task.TEXT_GENERATION)
    return await _answer(await services.plan_chat(data, entry))
