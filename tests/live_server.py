"""A real uvicorn server on a free port, for end-to-end tests over HTTP.

The launcher itself lives in :mod:`bench.server`, shared with the benchmark, so tests
and benchmark start the server the same way.
"""

from __future__ import annotations

from pathlib import Path

from bench.server import ROOT, UvicornServer, free_port

__all__ = ["LiveServer", "ROOT", "free_port"]


class LiveServer(UvicornServer):
    """`manage.py migrate` then `uvicorn gpt3dev.asgi:application`, on its own database,
    logging at warning level unless ``LOG_LEVEL`` is given."""

    def __init__(self, workdir: Path, **env: str) -> None:
        super().__init__(workdir, **{"LOG_LEVEL": "warning", **env})
