"""POST /tokenize and /detokenize (also under /v1/): validate -> service -> JSON.

The same API keys, per-key model lists and requests-per-minute as every API route (the
middleware and the selector see to that); no tokens-per-minute charge, since nothing is
generated. An upstream row's servers answer: the request goes to the root of each base
URL (``http://gpu-1:8000/v1`` -> ``http://gpu-1:8000/tokenize``), where vLLM serves them.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from completions import tokenize_services
from completions.tokenize_serializers import DetokenizeRequestSerializer, TokenizeRequestSerializer
from core.validation import avalidated
from models_api.selectors import aget_served_entry, allowed_models
from upstream import forward


async def _forwarded(request: HttpRequest, entry, route: str) -> HttpResponse:
    hops = forward.incoming_hops(request)
    status, body = await forward.forward_json(entry, f"/../{route}", request.openai_body, hops)
    response = JsonResponse(body, status=status)
    response.openai_error = status >= 400  # already in OpenAI's shape: the middleware leaves it alone
    return response


async def _serve(request: HttpRequest, serializer_class, service, route: str) -> HttpResponse:
    data = await avalidated(request, serializer_class)
    entry = await aget_served_entry(data["model"], allowed=allowed_models(request))
    if entry.is_upstream:
        return await _forwarded(request, entry, route)
    return JsonResponse(await service(data=data, entry=entry))


@csrf_exempt
@require_POST
async def create_tokenize(request: HttpRequest) -> HttpResponse:
    return await _serve(request, TokenizeRequestSerializer, tokenize_services.tokenize, "tokenize")


@csrf_exempt
@require_POST
async def create_detokenize(request: HttpRequest) -> HttpResponse:
    return await _serve(request, DetokenizeRequestSerializer, tokenize_services.detokenize, "detokenize")
