"""GET /v1/models and GET /v1/models/{id} in OpenAI's shape."""

from __future__ import annotations

import asyncio

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from models_api.engine import loaded_format
from models_api.models import ModelEntry
from models_api.selectors import aentry_for, allowed_models, context_window, sampling_defaults, served_entries


def model_object(entry: ModelEntry) -> dict:
    return {"id": entry.model_id, "object": "model", "created": entry.created_unix, "owned_by": entry.owned_by}


@csrf_exempt
@require_GET
async def list_models(request: HttpRequest) -> JsonResponse:
    data = [model_object(entry) async for entry in served_entries(allowed=allowed_models(request))]
    return JsonResponse({"object": "list", "data": data})


@csrf_exempt
@require_GET
async def retrieve_model(request: HttpRequest, model_id: str) -> JsonResponse:
    entry = await aentry_for(request, model_id)
    body = model_object(entry) | {
        "task": entry.task,
        "chat": entry.is_chat,
        "max_context_tokens": (entry.max_context_tokens if entry.is_upstream
                               else await asyncio.to_thread(context_window, entry)),
        "dtype": entry.dtype,
        "loaded_format": loaded_format(entry),
        "sampling_defaults": sampling_defaults(entry),
        "metadata": entry.metadata(),
    }
    return JsonResponse(body)
