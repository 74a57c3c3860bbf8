"""A real uvicorn server on a free port, for end-to-end tests over HTTP.

The launcher itself lives in :mod:`bench.server`, shared with the benchmark, so tests
and benchmark start the server the same way.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tempfile
import threading
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
        target = _new_sqlite_file(self.env["DATABASE_URL"])
        if target is not None:
            # A fresh SQLite file starts as a copy of one migrated once for the whole
            # run (migrations read no settings, so every fresh database is this one):
            # about a second less for each of the suite's two dozen servers.
            _copy_sqlite(_migrated_template(), target)
            seconds = 0.0
        else:
            seconds = super().migrate()
        if self.collect_static:
            subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
                           cwd=ROOT, env=self.env, check=True, capture_output=True, timeout=300)
        return seconds


_template: Path | None = None
_template_lock = threading.Lock()


def _new_sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:////absolute/path`` URL that does not exist yet, else None."""
    prefix = "sqlite:///"
    path = Path(url.removeprefix(prefix))
    if not url.startswith(prefix) or not path.is_absolute() or "?" in url:
        return None
    return None if path.exists() else path


def _migrated_template() -> Path:
    """A SQLite database that `manage.py migrate` built, once per test process."""
    global _template
    with _template_lock:
        if _template is None:
            workdir = Path(tempfile.mkdtemp(prefix="gpt3dev-migrated-"))
            path = workdir / "template.sqlite3"
            UvicornServer(workdir, DATABASE_URL=f"sqlite:///{path}").migrate()
            _template = path
        return _template


def _copy_sqlite(source: Path, target: Path) -> None:
    """Copy a database through SQLite's backup API (whatever its write-ahead log holds)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()
