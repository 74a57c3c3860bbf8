"""Import the JSON/YAML registry files of the earlier FastAPI version into the table.

The format is a list (or ``{"models": [...]}``) of entries with ``name``, ``hf_repo``,
``dtype``, ``device``, ``max_context_tokens``, ``is_instruct`` and ``metadata``. Our own
extensions: ``path`` (a local folder/file) or ``package`` instead of ``hf_repo``,
``revision``, ``task``, ``chat_template``, ``trust_remote_code``, ``enabled``,
``owned_by``. An ``upstream`` entry (a model served by other OpenAI-compatible servers)
gives ``upstream`` (a base URL or a list of them) instead, and may give
``upstream_model``, ``api_key_env`` (the name of an environment variable holding the
upstream's key: keys never belong in a file), ``timeout`` and ``max_concurrency``.
``sampling_defaults`` (a mapping of ``temperature``, ``top_p``, ``top_k``, ``min_p``,
``repetition_penalty``, ``presence_penalty``, ``frequency_penalty``, ``max_tokens``,
``stop``) sets the row's sampling defaults, all of them (a key left out clears that
one); without it a new row is seeded from its model's generation_config.json and an
existing row keeps its defaults, so an admin's edit survives a re-import (an upstream or
non-generation entry has none).
Importing the same file twice changes nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction

from models_api.models import SAMPLING_FIELDS, ModelEntry
from models_api.sampling import seed_sampling_defaults
from upstream.credentials import UnreadableKey, decrypt_key, encrypt_key

UPSTREAM_KEY = "upstream_api_key"  # the one column whose stored form is not the value

# Metadata keys of the earlier format (and common spellings) -> our columns.
METADATA_FIELDS = {
    "description": "description",
    "parameter_count": "parameter_count",
    "parameters": "parameter_count",
    "training_data": "training_data",
    "training_datasets": "training_data",
    "training_tokens": "training_tokens",
    "training_steps": "training_steps",
    "evaluation": "evaluation",
    "notes": "notes",
    "source_links": "source_links",
    "sources": "source_links",
    "links": "source_links",
}


class RegistryFileError(ValueError):
    """The file cannot be read or an entry in it is invalid; the message says which."""


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.created)} created, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged"
        )


def read_registry_file(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryFileError(f"Cannot read the registry file {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise RegistryFileError(f"The registry file {path} is not valid JSON/YAML: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("models"), list):
        data = data["models"]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise RegistryFileError(f"The registry file {path} must hold a list of model entries.")
    return data


def entry_fields(raw: dict[str, Any], position: int) -> dict[str, Any]:
    """The ModelEntry column values an entry of the file describes."""
    name = raw.get("name") or raw.get("id")
    if not isinstance(name, str) or not name:
        raise RegistryFileError(f"Entry {position} has no 'name'.")
    if "upstream" in raw:
        urls = raw["upstream"]
        source_type = ModelEntry.SourceType.UPSTREAM
        source = " ".join(str(u) for u in urls) if isinstance(urls, list) else urls
    elif "package" in raw:
        source_type, source = ModelEntry.SourceType.PACKAGE, raw["package"]
    elif "path" in raw:
        source_type, source = ModelEntry.SourceType.LOCAL, raw["path"]
    elif "hf_repo" in raw:
        source_type, source = ModelEntry.SourceType.HUB, raw["hf_repo"]
    else:
        raise RegistryFileError(f"Entry '{name}' needs 'hf_repo' (or 'path', 'package' or 'upstream').")
    values: dict[str, Any] = {
        "source_type": source_type,
        "source": str(source),
        "revision": raw.get("revision") or "",
        "task": raw.get("task", ModelEntry.Task.TEXT_GENERATION),
        "is_chat": bool(raw.get("is_instruct", raw.get("is_chat", False))),
        "chat_template": raw.get("chat_template") or "",
        "dtype": raw.get("dtype", "auto"),
        "device": raw.get("device", "auto"),
        "max_context_tokens": raw.get("max_context_tokens"),
        "trust_remote_code": bool(raw.get("trust_remote_code", False)),
        "enabled": bool(raw.get("enabled", True)),
        "owned_by": raw.get("owned_by") or _owner(str(source), source_type),
        "input_token_encoding": raw.get("input_token_encoding") or "",
    }
    if source_type == ModelEntry.SourceType.UPSTREAM:
        values |= _upstream_fields(raw, name)
    if "sampling_defaults" in raw:
        values |= _sampling_fields(raw["sampling_defaults"], name)
    elif source_type == ModelEntry.SourceType.UPSTREAM or values["task"] != ModelEntry.Task.TEXT_GENERATION:
        # Only rows this server generates with have defaults: a row the file turns into
        # an upstream or embeddings model (say, a default row) loses the ones it had.
        values |= _sampling_fields({}, name)
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise RegistryFileError(f"Entry '{name}': 'metadata' must be a mapping.")
    extra_notes = []
    for key, value in metadata.items():
        column = METADATA_FIELDS.get(key)
        if column == "source_links":
            values[column] = [str(v) for v in (value if isinstance(value, list) else [value])]
        elif column:
            values[column] = value if isinstance(value, str) else json.dumps(value)
        else:  # keep what the user wrote, even where we have no column for it
            extra_notes.append(f"{key}: {value if isinstance(value, str) else json.dumps(value)}")
    if extra_notes:
        values["notes"] = "\n".join(filter(None, [values.get("notes", ""), *extra_notes]))
    values["model_id"] = name
    return values


def _upstream_fields(raw: dict[str, Any], name: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "upstream_model": raw.get("upstream_model") or "",
        "upstream_timeout": raw.get("timeout", 300),
        "upstream_max_concurrency": raw.get("max_concurrency"),
        UPSTREAM_KEY: "",
    }
    if "api_key" in raw:
        raise RegistryFileError(
            f"Entry '{name}': give 'api_key_env' (the name of an environment variable holding the key), "
            "not the key itself."
        )
    env_name = raw.get("api_key_env")
    if env_name:
        if not os.environ.get(str(env_name)):
            raise RegistryFileError(f"Entry '{name}': the environment variable {env_name} (api_key_env) is not set.")
        values[UPSTREAM_KEY] = os.environ[str(env_name)]
    return values


def _sampling_fields(raw: Any, name: str) -> dict[str, Any]:
    """The sampling-default columns of ``sampling_defaults`` (every one: a key left out
    is no default). Values are checked by the model's clean(), named by their key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RegistryFileError(f"Entry '{name}': 'sampling_defaults' must be a mapping.")
    unknown = sorted(set(raw) - set(SAMPLING_FIELDS))
    if unknown:
        raise RegistryFileError(
            f"Entry '{name}': sampling_defaults.{unknown[0]} is not a sampling field "
            f"(known: {', '.join(SAMPLING_FIELDS)})."
        )
    values = {f"default_{field_name}": raw.get(field_name) for field_name in SAMPLING_FIELDS}
    stop = values["default_stop"]
    values["default_stop"] = [] if stop is None else [stop] if isinstance(stop, str) else stop
    return values


def _field_label(column: str) -> str:
    """A column as the file names it (``default_top_p`` is ``sampling_defaults.top_p``)."""
    return f"sampling_defaults.{column.removeprefix('default_')}" if column.startswith("default_") else column


def _same(entry: ModelEntry, name: str, value: Any) -> bool:
    """Whether a column already holds a value (the upstream key is stored encrypted, with
    a fresh nonce each time: compare it decrypted)."""
    if name != UPSTREAM_KEY:
        return getattr(entry, name) == value
    try:
        return decrypt_key(entry.upstream_api_key) == value
    except UnreadableKey:
        return False


def _owner(source: str, source_type: str) -> str:
    if source_type == ModelEntry.SourceType.HUB and "/" in source:
        return source.split("/", 1)[0]
    return "gpt3dev"


@transaction.atomic
def import_registry(entries: list[dict[str, Any]]) -> ImportReport:
    """Create or update one row per entry; rows already equal are not touched."""
    report = ImportReport()
    for position, raw in enumerate(entries):
        values = entry_fields(raw, position)
        model_id = values.pop("model_id")
        entry = ModelEntry.objects.filter(model_id=model_id).first()
        is_new = entry is None
        if is_new:
            entry = ModelEntry(model_id=model_id, origin=ModelEntry.Origin.FILE)
        changed = [name for name, value in values.items() if not _same(entry, name, value)]
        if not is_new and not changed:
            report.unchanged.append(model_id)
            continue
        for name in changed:
            setattr(entry, name, encrypt_key(values[name]) if name == UPSTREAM_KEY else values[name])
        if is_new and "default_temperature" not in values:
            seed_sampling_defaults(entry)
        try:
            entry.full_clean()
        except ValidationError as exc:
            details = "; ".join(f"{_field_label(k)}: {' '.join(v)}" for k, v in exc.message_dict.items())
            raise RegistryFileError(f"Entry '{model_id}' is invalid: {details}") from None
        entry.save()
        (report.created if is_new else report.updated).append(model_id)
    return report


def check_allow_list(allow_list: list[str]) -> None:
    """Every id of MODEL_ALLOW_LIST must exist: a typo must not silently serve nothing."""
    known = set(ModelEntry.objects.filter(model_id__in=allow_list).values_list("model_id", flat=True))
    unknown = [model_id for model_id in allow_list if model_id not in known]
    if unknown:
        raise RegistryFileError(
            f"MODEL_ALLOW_LIST names unknown model(s): {', '.join(unknown)}. "
            f"Known models: {', '.join(ModelEntry.objects.values_list('model_id', flat=True))}."
        )
