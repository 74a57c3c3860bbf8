"""Where a registry entry's weights live on this machine (local and packaged sources)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


class SourceError(ValueError):
    """The source does not point at anything that exists here."""


def resolve_local_path(source_type: str, source: str) -> Path:
    """The file or folder a local or package source names; SourceError if absent."""
    if source_type == "local":
        path = Path(source).expanduser()
        if not path.is_absolute():
            raise SourceError("A local source must be an absolute path.")
        if not path.exists():
            raise SourceError(f"Nothing exists at '{source}'.")
        return path
    if source_type == "package":
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
        return path
    raise SourceError(f"'{source_type}' sources are not on this machine.")


def disk_size(path: Path) -> int:
    """Bytes used by a file, or by every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
