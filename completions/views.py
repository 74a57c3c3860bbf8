"""Thin async views: validate -> plan -> run (JSON) or stream (SSE)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from access.ratelimit import areserve_tokens
from completions import services
from completions.serializers import ChatCompletionRequestSerializer, CompletionRequestSerializer
from core.errors import APIError
from core.http import sse_response
from core.validation import avalidated
from models_api.models import ModelEntry
from models_api.selectors import aget_served_entry, allowed_models
from upstream import budget, forward


async def _admit(request: HttpRequest, plan: services.Plan) -> None:
    """Server caps and the key's tokens-per-minute: the prompt tokens plus max_tokens for
    every sequence are reserved now and settled to the real usage when the answer ends."""
    param = "messages" if plan.kind == "chat.completion" else "prompt"
    prompt_tokens = sum(len(ids) for ids in plan.prompts)
    cap = settings.GPT3DEV["MAX_PROMPT_TOKENS"]
    if cap and prompt_tokens > cap:
        raise APIError(
            400,
            f"The prompt has {prompt_tokens} tokens; this server accepts at most {cap} prompt tokens per request.",
            param=param,
            code="prompt_too_long",
        )
    budget = prompt_tokens + plan.sampling.max_tokens * plan.samples * len(plan.prompts)
    await areserve_tokens(request, budget, param="max_tokens")


async def _forward(request: HttpRequest, data: dict, entry: ModelEntry, *, chat: bool) -> HttpResponse:
    """An upstream model: our checks, its reservation (see upstream.budget), then its
    servers answer (see upstream.forward)."""
    if chat:
        services.require_chat(entry)
    services.cap_samples(data)
    spend = budget.completion_budget(data, entry)
    await areserve_tokens(request, spend.tokens, param="max_tokens")
    body = budget.body_for_upstream(request.openai_body, spend)
    path = "/chat/completions" if chat else "/completions"
    hops = forward.incoming_hops(request)
    if data.get("stream"):
        return await forward.completion_stream(entry, path, body, hops)
    return await forward.completion_json(entry, path, body, hops)


async def _serve(request: HttpRequest, serializer_class, plan_request) -> HttpResponse:
    """Validate, find the model, plan, admit against the key's limits, then answer."""
    data = await avalidated(request, serializer_class)
    entry = await aget_served_entry(data["model"], task=ModelEntry.Task.TEXT_GENERATION, allowed=allowed_models(request))
    if entry.is_upstream:
        return await _forward(request, data, entry, chat=plan_request is services.plan_chat)
    plan = await plan_request(data, entry)
    await _admit(request, plan)
    if plan.stream:
        return sse_response(await services.start_stream(plan))
    return JsonResponse(await services.run(plan))


@csrf_exempt
@require_POST
async def create_completion(request: HttpRequest) -> HttpResponse:
    return await _serve(request, CompletionRequestSerializer, services.plan_completion)


@csrf_exempt
@require_POST
async def create_chat_completion(request: HttpRequest) -> HttpResponse:
    return await _serve(request, ChatCompletionRequestSerializer, services.plan_chat)
