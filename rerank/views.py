"""POST /v1/rerank (also /rerank and /v2/rerank) and POST /score (also /v1/score)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from core.validation import avalidated
from models_api.models import ModelEntry
from models_api.selectors import aget_served_entry, allowed_models, wrong_task
from rerank.serializers import RerankRequestSerializer, ScoreRequestSerializer
from rerank.services import rerank_create, score_create
from upstream import forward

SCORING_TASKS = (ModelEntry.Task.RERANK, ModelEntry.Task.EMBEDDINGS)


async def _serve(request: HttpRequest, serializer_class, service, upstream_path: str) -> HttpResponse:
    data = await avalidated(request, serializer_class)
    entry = await aget_served_entry(data["model"], allowed=allowed_models(request))
    if entry.task not in SCORING_TASKS:
        raise wrong_task(entry, ModelEntry.Task.RERANK)
    if entry.is_upstream:  # vLLM serves both under /v1/ too
        status, body = await forward.forward_json(entry, upstream_path, request.openai_body,
                                                  forward.incoming_hops(request))
        response = JsonResponse(body, status=status)
        response.openai_error = status >= 400  # already in OpenAI's shape
        return response
    return JsonResponse(await service(data=data, entry=entry))


@csrf_exempt
@require_POST
async def create_rerank(request: HttpRequest) -> HttpResponse:
    return await _serve(request, RerankRequestSerializer, rerank_create, "/rerank")


@csrf_exempt
@require_POST
async def create_score(request: HttpRequest) -> HttpResponse:
    return await _serve(request, ScoreRequestSerializer, score_create, "/score")
