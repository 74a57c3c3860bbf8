"""Seeding a registry row's sampling defaults from its model's ``generation_config.json``.

When a row is created in the admin or by a registry import, the sampling keys its model's
authors put in ``generation_config.json`` (``temperature``, ``top_p``, ``top_k``,
``min_p``, ``repetition_penalty``, ``max_new_tokens``, ``stop_strings``) fill the
defaults the row leaves empty, as vLLM's ``--generation-config auto`` does. The file is
read only where it already is on this machine (a local or packaged folder, or the
Hugging Face cache): creating a row never downloads anything. Values a request could
not send (out of range) are skipped, and with ``do_sample: false`` the authors meant
greedy decoding, so the sampling keys (not ``repetition_penalty``) are skipped too.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from models_api.models import SAMPLING_FIELDS, ModelEntry, sampling_value_problem
from models_api.sources import SourceError, resolve_local_path

logger = logging.getLogger("gpt3dev.models")

GENERATION_CONFIG = "generation_config.json"
# generation_config.json key -> the request field it is the default of.
CONFIG_KEYS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "max_new_tokens": "max_tokens",
    "stop_strings": "stop",
}
GREEDY_MOOT = ("temperature", "top_p", "top_k", "min_p")  # unused by transformers without do_sample


def generation_config_path(entry: ModelEntry) -> Path | None:
    """The row's model's generation_config.json, if it is on this machine."""
    if entry.is_upstream:
        return None
    if entry.source_type == ModelEntry.SourceType.HUB:
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(entry.source, GENERATION_CONFIG, revision=entry.revision or None)
        except Exception:  # an invalid repo id or an unreadable cache: nothing to seed from
            return None
        return Path(found) if isinstance(found, str) else None
    try:
        path = resolve_local_path(entry.source_type, entry.source)
    except SourceError:
        return None
    candidate = path / GENERATION_CONFIG if path.is_dir() else None  # a GGUF file carries none
    return candidate if candidate is not None and candidate.is_file() else None


def defaults_from_generation_config(config: dict[str, Any]) -> dict[str, Any]:
    """The sampling defaults a generation config recommends, by request field name."""
    found: dict[str, Any] = {}
    greedy = config.get("do_sample") is False
    for key, name in CONFIG_KEYS.items():
        value = config.get(key)
        if value is None or (greedy and key in GREEDY_MOOT):
            continue
        if name == "stop" and isinstance(value, str):
            value = [value]
        if sampling_value_problem(name, value) is None:
            found[name] = int(value) if name in ("top_k", "max_tokens") else value
    return found


def seed_sampling_defaults(entry: ModelEntry) -> dict[str, Any]:
    """Fill the row's empty sampling defaults from its generation_config.json (unsaved);
    returns what was filled. Only text-generation rows this server runs have defaults."""
    if entry.task != ModelEntry.Task.TEXT_GENERATION or entry.is_upstream:
        return {}
    path = generation_config_path(entry)
    if path is None:
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("Cannot read %s for %s's sampling defaults: %s", path, entry.model_id, exc)
        return {}
    if not isinstance(config, dict):
        return {}
    seeded = {}
    for name, value in defaults_from_generation_config(config).items():
        current = getattr(entry, f"default_{name}")
        if current is None or current == []:
            setattr(entry, f"default_{name}", value)
            seeded[name] = value
    return seeded


def describe(defaults: dict[str, Any]) -> str:
    """``temperature=0.2 top_p=0.9`` for a log line or an admin message."""
    return " ".join(f"{name}={json.dumps(defaults[name], ensure_ascii=False)}" for name in SAMPLING_FIELDS
                    if name in defaults)
