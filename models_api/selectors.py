"""Read-side of the registry: which entries are served, and the engine spec of each.

Every API request reads the table (one indexed query), so an admin edit takes effect
on the next request in every server process, with no cache to invalidate.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.db.models import QuerySet

from core import usage
from core.errors import APIError, model_not_found
from inference.types import ModelSpec
from inference.window import spec_window
from models_api.models import ModelEntry


def _conf(name: str):
    return settings.GPT3DEV[name]


def served_entries(*, allowed: Iterable[str] | None = None) -> QuerySet[ModelEntry]:
    """Enabled entries, narrowed by INCLUDE_DEFAULT_MODELS and MODEL_ALLOW_LIST, and by
    ``allowed`` (an API key's model ids; None: no narrowing)."""
    queryset = ModelEntry.objects.filter(enabled=True)
    if allowed is not None:
        queryset = queryset.filter(model_id__in=list(allowed))
    if not _conf("INCLUDE_DEFAULT_MODELS"):
        queryset = queryset.exclude(origin=ModelEntry.Origin.DEFAULT)
    allow = _conf("MODEL_ALLOW_LIST")
    if allow:
        queryset = queryset.filter(model_id__in=allow)
    return queryset


async def aget_served_entry(
    model_id: object, *, task: str | None = None, allowed: Iterable[str] | None = None, used: usage.Usage | None = None
) -> ModelEntry:
    """The served entry for a request's ``model``, or the 404/400 a client should see.
    A model outside ``allowed`` (the API key's list) is a 404, as if it did not exist.
    The entry becomes ``used``'s model (the metrics' label, the ledger's row), even when
    it then turns out to serve another task."""
    if not isinstance(model_id, str) or not model_id:
        raise APIError(400, "You must provide a model parameter.", param="model")
    entry = await served_entries(allowed=allowed).filter(model_id=model_id).afirst()
    if entry is None:
        raise model_not_found(model_id)
    if used is not None:
        used.model = entry.model_id
    if task is not None and entry.task != task:
        raise wrong_task(entry, task)
    return entry


def get_served_entry(model_id: str, *, allowed: Iterable[str] | None = None) -> ModelEntry:
    entry = served_entries(allowed=allowed).filter(model_id=model_id).first()
    if entry is None:
        raise model_not_found(model_id)
    return entry


TASK_HINTS = {
    ModelEntry.Task.EMBEDDINGS: "it is an embeddings model: use /v1/embeddings (or /v1/rerank, /score)",
    ModelEntry.Task.RERANK: "it is a reranking model: use /v1/rerank or /score",
    ModelEntry.Task.TEXT_GENERATION: "it is a text generation model: use /v1/completions or /v1/chat/completions",
}
PURPOSES = {
    ModelEntry.Task.EMBEDDINGS: "embeddings",
    ModelEntry.Task.RERANK: "reranking",
    ModelEntry.Task.TEXT_GENERATION: "text generation",
}


def wrong_task(entry: ModelEntry, wanted: str) -> APIError:
    hint = TASK_HINTS.get(entry.task, f"its task is {entry.task}")
    purpose = PURPOSES.get(wanted, wanted)
    return APIError(400, f"The model '{entry.model_id}' cannot be used for {purpose}; {hint}.", param="model")


def sampling_defaults(entry: ModelEntry) -> dict:
    """The row's sampling defaults in force: what a request that leaves a field out gets
    instead of OpenAI's default (none with MODEL_SAMPLING_DEFAULTS=0)."""
    if not _conf("MODEL_SAMPLING_DEFAULTS") or entry.is_upstream or entry.task != ModelEntry.Task.TEXT_GENERATION:
        return {}
    return entry.sampling_defaults()


async def aentry_for(request, model_id: object, *, task: str | None = None) -> ModelEntry:
    """The served entry a request names, within its API key's models."""
    return await aget_served_entry(model_id, task=task, allowed=allowed_models(request), used=usage.of(request))


def allowed_models(request) -> tuple[str, ...] | None:
    """The model ids the request's API key may use (None: every served model)."""
    principal = getattr(request, "api_key", None)
    return None if principal is None else principal.allowed_models


def spec_from_entry(entry: ModelEntry) -> ModelSpec:
    """The frozen engine spec for a registry row (settings fill what the row leaves open)."""
    return ModelSpec(
        id=entry.model_id,
        task=entry.task,
        source_type=entry.source_type,
        source=entry.source,
        revision=entry.revision or None,
        dtype=entry.dtype,
        device=entry.device if entry.device != "auto" else _conf("DEFAULT_DEVICE"),
        max_context_tokens=entry.max_context_tokens,
        trust_remote_code=entry.trust_remote_code,
        chat_template=entry.chat_template or None,
        input_token_encoding=entry.input_token_encoding or None,
        hf_token=_conf("HF_TOKEN"),
    )


def context_window(entry: ModelEntry) -> int | None:
    """The window the engine enforces for this row (its override, else what the model's
    files declare), read without loading the model; None when the files are not here
    (a Hub model not downloaded yet). Blocking: it may read a file header."""
    return spec_window(spec_from_entry(entry), _conf("MAX_CONTEXT_TOKENS"))
