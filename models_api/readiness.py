"""Whether the served models can be loaded here, without loading them."""

from __future__ import annotations

import importlib.util

from django.conf import settings
from django.db import DatabaseError

from inference.sources import is_offline
from models_api.engine import engine_if_started
from models_api.models import ModelEntry
from models_api.selectors import served_entries
from models_api.sources import SourceError, resolve_local_path
from upstream.pool import existing_pool, pool_for


def entry_loadable(entry: ModelEntry) -> tuple[bool, str]:
    """(loadable, why) judged from what is on disk and whether the Hub is reachable;
    for an upstream row, from its servers' health as this process last saw it."""
    if entry.is_upstream:
        return upstream_health(entry)
    if entry.source_type == ModelEntry.SourceType.HUB:
        if is_offline(settings.GPT3DEV["HF_HUB_OFFLINE"]):
            return False, "a Hub repo, and HF_HUB_OFFLINE is set"
        return True, "a Hub repo (downloaded on first use)"
    try:
        path = resolve_local_path(entry.source_type, entry.source)
    except SourceError as exc:
        return False, str(exc)
    if path.suffix == ".gguf" and importlib.util.find_spec("gguf") is None:
        return False, "a GGUF file, and the 'gguf' package is not installed"
    return True, f"on disk at {path.name}"


def upstream_health(entry: ModelEntry) -> tuple[bool, str]:
    pool = existing_pool(entry.model_id)
    servers = len(entry.upstream_urls())
    if pool is None:
        return True, f"upstream: {servers} server(s), not checked yet"
    healthy = sum(1 for s in pool.servers if s.healthy)
    return healthy > 0, f"upstream: {healthy} of {len(pool.servers)} server(s) healthy"


def readiness_report() -> dict:
    try:
        entries = list(served_entries())
    except DatabaseError:
        return {"ready": False, "database": "unavailable", "models": []}
    engine = engine_if_started()
    stats = engine.model_stats() if engine is not None else {}
    models = []
    for entry in entries:
        ok, why = entry_loadable(entry)
        row = {"id": entry.model_id, "loadable": ok, "loaded": entry.model_id in stats, "detail": why}
        if entry.is_upstream:
            pool = existing_pool(entry.model_id)
            row["upstreams"] = pool.report() if pool is not None else []
        models.append(row | stats.get(entry.model_id, {}))
    defaults_ok = all(m["loadable"] for m, e in zip(models, entries) if e.origin == ModelEntry.Origin.DEFAULT)
    return {"ready": bool(models) and defaults_ok, "database": "ok", "models": models}


async def start_upstream_health_checks() -> None:
    """Make sure every served upstream row's servers are being checked (a probe of
    /readyz starts them, so an idle gateway knows its upstreams before traffic comes)."""
    try:
        entries = [e async for e in served_entries().filter(source_type=ModelEntry.SourceType.UPSTREAM)]
    except DatabaseError:
        return
    for entry in entries:
        pool_for(entry).ensure_health_checks()
