"""POST /v1/rerank (also /rerank and /v2/rerank) and POST /score (also /v1/score)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from core import usage
from core.validation import avalidated
from models_api.models import ModelEntry
from models_api.selectors import aentry_for, wrong_task
from rerank.serializers import RerankRequestSerializer, ScoreRequestSerializer
from rerank.services import rerank_create, score_create
from upstream import forward

SCORING_TASKS = (ModelEntry.Task.RERANK, ModelEntry.Task.EMBEDDINGS)


async def _serve(request: HttpRequest, serializer_class, service, upstream_path: str) -> HttpResponse:
    data = await avalidated(request, serializer_class)
    entry = await aentry_for(request, data["model"])
    if entry.task not in SCORING_TASKS:
        raise wrong_task(entry, ModelEntry.Task.RERANK)
    if entry.is_upstream:  # vLLM serves both under /v1/ too
        return await forward.relay_json(request, entry, upstream_path)
    return JsonResponse(await service(data=data, entry=entry, used=usage.of(request)))


@csrf_exempt
@require_POST
async def create_rerank(request: HttpRequest) -> HttpResponse:
    return await _serve(request, RerankRequestSerializer, rerank_create, "/rerank")


@csrf_exempt
@require_POST
async def create_score(request: HttpRequest) -> HttpResponse:
    return await _serve(request, ScoreRequestSerializer, score_create, "/score")
