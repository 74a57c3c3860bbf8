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
from models_api.selectors import aentry_for
from upstream import forward


async def _serve(request: HttpRequest, serializer_class, service, route: str) -> HttpResponse:
    data = await avalidated(request, serializer_class)
    entry = await aentry_for(request, data["model"])
    if entry.is_upstream:  # to the root of each base URL, where vLLM serves them
        return await forward.relay_json(request, entry, f"/../{route}")
    return JsonResponse(await service(data=data, entry=entry))


@csrf_exempt
@require_POST
async def create_tokenize(request: HttpRequest) -> HttpResponse:
    return await _serve(request, TokenizeRequestSerializer, tokenize_services.tokenize, "tokenize")


@csrf_exempt
@require_POST
async def create_detokenize(request: HttpRequest) -> HttpResponse:
    return await _serve(request, DetokenizeRequestSerializer, tokenize_services.detokenize, "detokenize")
