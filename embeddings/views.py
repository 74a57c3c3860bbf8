"""POST /v1/embeddings."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from embeddings.serializers import EmbeddingRequestSerializer
from embeddings.services import embeddings_create
from gpt3dev.errors import APIError
from gpt3dev.views_api import avalidated
from models_api.models import ModelEntry
from models_api.selectors import aget_served_entry, allowed_models
from upstream import forward


@csrf_exempt
@require_POST
async def create_embeddings(request: HttpRequest) -> HttpResponse:
    if not settings.GPT3DEV["ENABLE_EMBEDDINGS_BACKEND"]:
        raise APIError(
            501,
            "The embeddings backend is disabled on this server (ENABLE_EMBEDDINGS_BACKEND=0).",
            code="embeddings_disabled",
        )
    data = await avalidated(request, EmbeddingRequestSerializer)
    entry = await aget_served_entry(data["model"], task=ModelEntry.Task.EMBEDDINGS, allowed=allowed_models(request))
    if entry.is_upstream:
        return await forward.embeddings_json(entry, request.openai_body, forward.incoming_hops(request))
    return JsonResponse(await embeddings_create(data=data, entry=entry))
