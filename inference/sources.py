"""Where packaged weights live: a file or folder inside an installed Python package.

Torch-free, so the web layer can validate registry rows without loading the engine.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def default_cache_dir() -> Path:
    """The model cache (GGUF conversions): ``MODEL_CACHE_DIR``, else
    ``~/.cache/gpt3dev/models``. The one reading of it, shared by the settings, the
    benchmark and the engine tests."""
    value = (os.environ.get("MODEL_CACHE_DIR") or "").strip()
    return Path(value or Path.home() / ".cache" / "gpt3dev" / "models").expanduser()


def is_offline(config_offline: bool) -> bool:
    """Offline if the configuration says so or HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is
    truthy in the environment: the one reading of the flag, for the engine, the
    readiness probe and the management commands."""
    env = os.environ.get("HF_HUB_OFFLINE", "") or os.environ.get("TRANSFORMERS_OFFLINE", "")
    return config_offline or env.strip().lower() in {"1", "true", "yes", "on"}


class SourceError(ValueError):
    """The source does not point at anything that exists here."""


def package_path(source: str) -> Path:
    """'python_package/path/inside/it' -> that path; SourceError when the package is
    missing, the path does not exist, or it leaves the package ('..' or a symlink)."""
    package, _, inner = source.partition("/")
    if not package or not inner:
        raise SourceError("A package source is 'python_package/path/inside/it'.")
    if ".." in Path(inner).parts:
        raise SourceError("A package source may not leave its package ('..').")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(f"The Python package '{package}' is not installed.")
    root = Path(list(spec.submodule_search_locations)[0])
    path = root / inner
    if not path.exists():
        raise SourceError(f"The package '{package}' has no file or folder '{inner}'.")
    if not path.resolve().is_relative_to(root.resolve()):
        raise SourceError(f"'{inner}' leads (through a symlink) outside the package '{package}'.")
    return path
