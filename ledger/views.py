"""OpenAI's Usage API over the ledger: GET /v1/organization/usage/completions and
/v1/organization/usage/embeddings.

Only admin keys may read it (every key's usage is in it); an open server answers
everyone. The ledger keeps hours, so ``bucket_width`` is ``1h`` or ``1d`` (a ``1m`` is a
400 naming it) and buckets are aligned to UTC hours and days (``start_time`` is rounded
down to its bucket). ``group_by`` takes ``api_key_id`` and ``model``; projects, users and
service tiers are not kept here, so grouping or filtering by them is a 400. An
``api_key_id`` is the ledger's stable key id: ``db:<id>`` for a stored key,
``env:<name>`` for one from API_KEYS, ``anonymous`` for requests without a key.
"""

from __future__ import annotations

import re
from itertools import islice

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from core.errors import APIError
from ledger import queries, recorder

WIDTHS = {"1h": (3600, 24, 168), "1d": (86400, 7, 31)}  # seconds, default limit, largest limit
GROUP_FIELDS = {"api_key_id": "key_id", "model": "model"}
NOT_KEPT = ("project_id", "user_id", "service_tier", "api_source")
PAGE_RE = re.compile(r"^page_([0-9]{1,12})$")


def _require_admin(request: HttpRequest) -> None:
    principal = getattr(request, "api_key", None)
    if principal is not None and not getattr(principal, "admin", False):
        raise APIError(
            403,
            f"The API key '{principal.name}' may not read usage: only admin keys may "
            "(`manage.py create_api_key NAME --admin`, or the admin box of a key).",
            code="insufficient_permissions",
        )


def _listed(request: HttpRequest, name: str) -> list[str]:
    """An array parameter: ``name=a&name=b`` or ``name[]=a&name[]=b`` (OpenAI's clients)."""
    return [value for value in (*request.GET.getlist(name), *request.GET.getlist(f"{name}[]")) if value]


def _integer(request: HttpRequest, name: str, *, required: bool = False, minimum: int = 0) -> int | None:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        if required:
            raise APIError(400, f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
        return None
    try:
        value = int(raw)
    except ValueError:
        raise APIError(400, f"Invalid value for '{name}': expected an integer, got '{raw[:40]}'.", param=name,
                       code="invalid_value") from None
    if value < minimum:
        raise APIError(400, f"Invalid value for '{name}': must be at least {minimum}.", param=name,
                       code="invalid_value")
    return value


def _parse(request: HttpRequest) -> dict:
    width_name = request.GET.get("bucket_width") or "1d"
    if width_name == "1m":
        raise APIError(400, "Invalid value for 'bucket_width': '1m' is not available here, since usage is kept per "
                       "hour; use '1h' or '1d'.", param="bucket_width", code="invalid_value")
    if width_name not in WIDTHS:
        raise APIError(400, f"Invalid value for 'bucket_width': '{width_name[:20]}'; use '1h' or '1d'.",
                       param="bucket_width", code="invalid_value")
    width, default_limit, max_limit = WIDTHS[width_name]
    start = _integer(request, "start_time", required=True)
    end = _integer(request, "end_time")
    if end is None:
        end = int(recorder.now()) + 1
    if end <= start:
        raise APIError(400, "Invalid value for 'end_time': it must be later than 'start_time'.", param="end_time",
                       code="invalid_value")
    limit = _integer(request, "limit", minimum=1)
    if limit is not None and limit > max_limit:
        raise APIError(400, f"Invalid value for 'limit': at most {max_limit} buckets with bucket_width={width_name}.",
                       param="limit", code="invalid_value")
    group_by = _listed(request, "group_by")
    for field in group_by:
        if field in NOT_KEPT or field == "batch":
            raise APIError(400, f"Invalid value for 'group_by': '{field}' is not kept on this server; group by "
                           "'api_key_id' and/or 'model'.", param="group_by", code="invalid_value")
        if field not in GROUP_FIELDS:
            raise APIError(400, f"Invalid value for 'group_by': '{field[:40]}'; use 'api_key_id' and/or 'model'.",
                           param="group_by", code="invalid_value")
    for name in ("project_ids", "user_ids"):
        if _listed(request, name):
            raise APIError(400, f"Invalid value for '{name}': projects and users are not kept on this server.",
                           param=name, code="invalid_value")
    batch = request.GET.get("batch")
    if batch not in (None, "", "true", "false"):
        raise APIError(400, "Invalid value for 'batch': use true or false.", param="batch", code="invalid_value")
    first = start - start % width
    page = request.GET.get("page")
    if page:
        found = PAGE_RE.match(page)
        cursor = int(found.group(1)) if found else -1
        if cursor < first or cursor >= end or (cursor - first) % width:
            raise APIError(400, "Invalid value for 'page': not a cursor of this query; pass the next_page of the "
                           "previous answer with the same start_time, end_time and bucket_width.", param="page",
                           code="invalid_value")
        first = cursor
    return {
        "width": width,
        "first": first,
        "end": end,
        "limit": limit or default_limit,
        "group_by": list(dict.fromkeys(group_by)),
        "key_ids": _listed(request, "api_key_ids"),
        "models": _listed(request, "models"),
        "batch_only": batch == "true",  # no batch jobs run here: nothing is batch usage
    }


def _completions_result(sums: dict, grouped: dict) -> dict:
    cached, inputs, outputs = sums["cached_tokens"], sums["input_tokens"], sums["output_tokens"]
    return {
        "object": "organization.usage.completions.result",
        "input_tokens": inputs,
        "input_cached_tokens": cached,
        "input_uncached_tokens": inputs - cached,
        "input_text_tokens": inputs - cached,
        "input_cached_text_tokens": cached,
        "output_tokens": outputs,
        "output_text_tokens": outputs,
        "input_audio_tokens": 0,
        "input_cached_audio_tokens": 0,
        "output_audio_tokens": 0,
        "input_image_tokens": 0,
        "input_cached_image_tokens": 0,
        "output_image_tokens": 0,
        "num_model_requests": sums["num_model_requests"],
        "project_id": None,
        "user_id": None,
        "api_key_id": grouped.get("api_key_id"),
        "model": grouped.get("model"),
        "batch": None,
        "service_tier": None,
    }


def _embeddings_result(sums: dict, grouped: dict) -> dict:
    return {
        "object": "organization.usage.embeddings.result",
        "input_tokens": sums["input_tokens"],
        "num_model_requests": sums["num_model_requests"],
        "project_id": None,
        "user_id": None,
        "api_key_id": grouped.get("api_key_id"),
        "model": grouped.get("model"),
    }


def _usage_page(request: HttpRequest, endpoints: tuple[str, ...], result) -> JsonResponse:
    _require_admin(request)
    args = _parse(request)
    recorder.flush_before_reading()
    width, first, end, limit = args["width"], args["first"], args["end"], args["limit"]
    starts = list(islice(range(first, end, width), limit))
    after = starts[-1] + width if starts else end
    found = {} if args["batch_only"] or not starts else queries.bucketed(
        start=starts[0],
        end=min(after, end),
        width=width,
        endpoints=endpoints,
        key_ids=args["key_ids"],
        models=args["models"],
        group_by=[GROUP_FIELDS[name] for name in args["group_by"]],
    )
    data = []
    for bucket in starts:
        results = []
        for item in found.get(bucket, ()):
            sums = {name: int(item[name] or 0) for name in queries.SUMS}
            sums["num_model_requests"] = sums["requests"] - sums["errors_4xx"] - sums["errors_5xx"]
            if not sums["num_model_requests"] and not sums["input_tokens"] and not sums["output_tokens"]:
                continue  # only refused requests: no model was used
            grouped = {name: (item[GROUP_FIELDS[name]] or None) for name in args["group_by"]}
            results.append(result(sums, grouped))
        data.append({"object": "bucket", "start_time": bucket, "end_time": bucket + width, "results": results})
    has_more = after < end
    return JsonResponse({"object": "page", "data": data, "has_more": has_more,
                         "next_page": f"page_{after}" if has_more else None})


@require_GET
def usage_completions(request: HttpRequest) -> JsonResponse:
    return _usage_page(request, queries.COMPLETIONS_ENDPOINTS, _completions_result)


@require_GET
def usage_embeddings(request: HttpRequest) -> JsonResponse:
    return _usage_page(request, queries.EMBEDDINGS_ENDPOINTS, _embeddings_result)
