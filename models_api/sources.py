"""Where a registry entry's weights live on this machine (local and packaged sources)."""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings

from inference.sources import SourceError, package_path

__all__ = ["SourceError", "disk_size", "local_roots", "resolve_local_path"]


def local_roots() -> list[Path]:
    """The folders local sources must sit in (MODEL_LOCAL_ROOTS), symlinks resolved."""
    return [Path(root).expanduser().resolve() for root in settings.GPT3DEV["MODEL_LOCAL_ROOTS"]]


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def resolve_local_path(source_type: str, source: str) -> Path:
    """The file or folder a local or package source names; SourceError if absent, or
    if it is (or resolves through a symlink to) a place outside the allowed roots."""
    if source_type == "local":
        path = Path(source).expanduser()
        if not path.is_absolute():
            raise SourceError("A local source must be an absolute path.")
        if ".." in path.parts:
            raise SourceError("A local source may not contain '..'.")
        configured = [Path(root).expanduser() for root in settings.GPT3DEV["MODEL_LOCAL_ROOTS"]]
        roots = local_roots()
        written = Path(os.path.normpath(path))
        if not any(_inside(written, root) for root in configured + roots):
            raise SourceError(_outside_message(source, configured))
        if not path.exists():
            raise SourceError(f"Nothing exists at '{source}'.")
        if not any(_inside(path.resolve(), root) for root in roots):
            raise SourceError(f"'{source}' leads (through a symlink) outside the folders local models may come from.")
        return path
    if source_type == "package":
        return package_path(source)
    raise SourceError(f"'{source_type}' sources are not on this machine.")


def _outside_message(source: str, roots: list[Path]) -> str:
    allowed = ", ".join(str(root) for root in roots) or "none (MODEL_LOCAL_ROOTS is empty)"
    return f"'{source}' is outside the folders local models may come from (MODEL_LOCAL_ROOTS: {allowed})."


def disk_size(path: Path) -> int:
    """Bytes used by a file, or by every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
