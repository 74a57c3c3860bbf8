"""Thin async views: validate -> plan -> run (JSON) or stream (SSE)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from access.ratelimit import areserve_tokens
from completions import services
from completions.serializers import ChatCompletionRequestSerializer, CompletionRequestSerializer
from gpt3dev.errors import APIError
from gpt3dev.http import sse_response
from gpt3dev.views_api import avalidated, text_chars
from models_api.models import ModelEntry
from models_api.selectors import aget_served_entry, allowed_models
from upstream import forward


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


def _estimated_tokens(data: dict, entry: ModelEntry) -> int:
    """An upstream model's reservation before its server counts: about four characters
    a token for the prompt (OpenAI's rule of thumb), plus max_tokens for every sequence."""
    chat = "messages" in data
    prompts = 1 if chat or isinstance(data["prompt"], str) else len(data["prompt"])
    prompt_chars = text_chars(data["messages"] if chat else data["prompt"])
    requested = data.get("max_completion_tokens") or data.get("max_tokens")
    if requested is None:
        requested = (entry.max_context_tokens or 0) if chat else 16
    sequences = max(data.get("n") or 1, data.get("best_of") or 1) * prompts
    return -(-prompt_chars // 4) + requested * sequences


async def _forward(request: HttpRequest, data: dict, entry: ModelEntry, *, chat: bool) -> HttpResponse:
    """An upstream model: our checks, then its servers answer (see upstream.forward)."""
    if chat:
        services.require_chat(entry)
    services.cap_samples(data)
    await areserve_tokens(request, _estimated_tokens(data, entry), param="max_tokens")
    path = "/chat/completions" if chat else "/completions"
    hops = forward.incoming_hops(request)
    if data.get("stream"):
        return await forward.completion_stream(entry, path, request.openai_body, hops)
    return await forward.completion_json(entry, path, request.openai_body, hops)


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
