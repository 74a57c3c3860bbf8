"""The context window a model declares in its files, read without loading it.

Torch-free, so ``GET /v1/models/{id}`` can report the window the engine will enforce
for a model that is not loaded yet. The rules are the engine's own: a registry override
first; for generation the config's position limit, else the tokenizer's, else the
server default; for embeddings and cross-encoders sentence-transformers'
``max_seq_length``, else the smaller of the config's and the tokenizer's limits. A GGUF file is read for its
``<architecture>.context_length`` header entry, without reading the weights.
"""

from __future__ import annotations

import functools
import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

from . import sources
from .types import ModelSpec

_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
_UNBOUNDED = 1_000_000  # tokenizers without a limit say 1e30


def generation_window(config: dict[str, Any], tokenizer_max: Any, default: int) -> int:
    for key in _POSITION_KEYS:
        if config.get(key):
            return int(config[key])
    if tokenizer_max and int(tokenizer_max) < _UNBOUNDED:
        return int(tokenizer_max)
    return default


def embedding_window(sentence_max: Any, config_max: Any, tokenizer_max: Any) -> int:
    if sentence_max:
        return int(sentence_max)
    limits = [int(x) for x in (config_max, tokenizer_max) if x and int(x) < _UNBOUNDED]
    return min(limits) if limits else 512


def declared_window(path: Path, task: str, default: int) -> int | None:
    """The window of the model at ``path`` (a folder or a .gguf file); None if unknown."""
    if path.is_file():
        window = gguf_context_length(path) if path.suffix.lower() == ".gguf" else None
        return window if window else (default if task == "text-generation" else None)
    if not path.is_dir():
        return None
    config = _json(path / "config.json")
    tokenizer_max = _json(path / "tokenizer_config.json").get("model_max_length")
    if task in ("embeddings", "rerank"):  # encoders: the smaller of the declared limits
        sentence_max = _json(path / "sentence_bert_config.json").get("max_seq_length")
        return embedding_window(sentence_max, config.get("max_position_embeddings"), tokenizer_max)
    return generation_window(config, tokenizer_max, default)


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


# GGUF value types: fixed-size ones by struct format; 8 is a string, 9 an array.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_context_length(path: Path) -> int | None:
    """``<general.architecture>.context_length`` from a GGUF header, or None."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _gguf_context_length(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)  # keyed on the file's mtime and size too
def _gguf_context_length(path: str, _mtime: int, _size: int) -> int | None:
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                return None
            version = _read(f, "I")
            wide = "Q" if version >= 2 else "I"  # GGUF v1 used 32-bit counts and lengths
            _read(f, wide)  # tensor count
            found: dict[str, Any] = {}
            for _ in range(_read(f, wide)):
                key = _read_string(f, wide)
                value = _read_value(f, _read(f, "I"), wide)
                if key == "general.architecture" or key.endswith(".context_length"):
                    found[key] = value
                arch = found.get("general.architecture")
                if arch and f"{arch}.context_length" in found:
                    return int(found[f"{arch}.context_length"])
    except (OSError, struct.error, ValueError, UnicodeDecodeError):
        return None
    return None


def _read(f: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize("<" + fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("truncated GGUF header")
    return struct.unpack("<" + fmt, data)[0]


def _read_string(f: BinaryIO, wide: str) -> str:
    return f.read(_read(f, wide)).decode("utf-8")


def _read_value(f: BinaryIO, kind: int, wide: str) -> Any:
    if kind in _GGUF_SCALARS:
        return _read(f, _GGUF_SCALARS[kind])
    if kind == 8:
        return _read_string(f, wide)
    if kind == 9:  # an array (token lists): skipped, its values are never needed here
        item, count = _read(f, "I"), _read(f, wide)
        if item in _GGUF_SCALARS:
            f.seek(struct.calcsize("<" + _GGUF_SCALARS[item]) * count, 1)
        else:
            for _ in range(count):
                _read_value(f, item, wide)
        return None
    raise ValueError(f"unknown GGUF value type {kind}")


def spec_window(spec: ModelSpec, default: int) -> int | None:
    """The window the engine will enforce for ``spec``, from files already on this
    machine (a Hub model only from the local cache: never a download); None if unknown."""
    if spec.max_context_tokens:
        return int(spec.max_context_tokens)
    try:
        if spec.source_type == "package":
            path = sources.package_path(spec.source)
        elif spec.source_type == "local":
            path = Path(spec.source).expanduser()
        else:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(repo_id=spec.source, revision=spec.revision, local_files_only=True))
    except Exception:  # not installed, not cached, not there: unknown until it loads
        return None
    return declared_window(path, spec.task, default)
