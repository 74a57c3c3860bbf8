"""A real uvicorn server on a free port, for end-to-end tests over HTTP.

The launcher itself lives in :mod:`bench.server`, shared with the benchmark, so tests
and benchmark start the server the same way.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.server import ROOT, UvicornServer, free_port

__all__ = ["LiveServer", "ROOT", "free_port"]


class LiveServer(UvicornServer):
    """`manage.py migrate` then `uvicorn gpt3dev.asgi:application`, on its own database,
    logging at warning level unless ``LOG_LEVEL`` is given. ``UPSTREAM_ALLOWED_HOSTS``
    lists 127.0.0.1 unless given: the tests' upstream servers (another live server, the
    fake upstream) listen on loopback, which the URL policy refuses unless listed.

    Static files come from the work folder's own ``STATIC_ROOT``, never from a
    ``staticfiles/`` that an earlier ``make run`` left in the checkout (it may be stale):
    with ``collect_static`` the server serves them as ``make run`` does, collected by
    ``manage.py collectstatic``; without it, straight from the apps' ``static/`` folders.
    """

    def __init__(self, workdir: Path, *, collect_static: bool = False, **env: str) -> None:
        super().__init__(workdir, **{"LOG_LEVEL": "warning", "STATIC_ROOT": str(Path(workdir) / "static"),
                                     "UPSTREAM_ALLOWED_HOSTS": "127.0.0.1", **env})
        self.collect_static = collect_static

    def migrate(self) -> float:
        seconds = super().migrate()
        if self.collect_static:
            subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
                           cwd=ROOT, env=self.env, check=True, capture_output=True, timeout=300)
        return seconds
