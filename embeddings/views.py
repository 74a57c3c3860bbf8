"""POST /v1/embeddings: validate, find the model, reserve its input tokens, answer."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from access.ratelimit import areserve_tokens
from core import usage
from core.errors import APIError
from core.validation import avalidated
from embeddings.serializers import EmbeddingRequestSerializer
from embeddings.services import plan_embeddings, run_embeddings
from models_api.models import ModelEntry
from models_api.selectors import aentry_for
from upstream import budget, forward


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
    entry = await aentry_for(request, data["model"], task=ModelEntry.Task.EMBEDDINGS)
    used = usage.of(request)
    if entry.is_upstream:  # an estimate (no tokenizer here), settled to the upstream's usage
        await areserve_tokens(request, budget.embeddings_budget(data), param="input")
        return await forward.embeddings_json(entry, request.openai_body, used, forward.incoming_hops(request))
    plan = await plan_embeddings(data=data, entry=entry)
    await areserve_tokens(request, plan.prompt_tokens, param="input")  # before any forward pass
    return JsonResponse(await run_embeddings(plan, used))
