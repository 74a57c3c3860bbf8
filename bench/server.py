"""Start and stop the server as a real uvicorn subprocess, and measure it from outside.

:class:`UvicornServer` is the one launcher shared by the benchmark and the end-to-end
tests (``tests/live_server.py``): ``manage.py migrate`` on its own database, then
``python -m uvicorn gpt3dev.asgi:application`` with uvicorn's default settings on a
free port, logging to ``server.log`` in its work folder (and noting when each piece of
output arrived). :func:`measure_cold_start` times process start to first answer, and the
longest the server stayed silent meanwhile; :func:`resident_memory` reads the process's RSS.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


def own_database(workdir: Path) -> dict[str, str]:
    """The environment that gives a server started here a SQLite database of its own."""
    return {"DATABASE_URL": f"sqlite:///{Path(workdir) / 'db.sqlite3'}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class UvicornServer:
    """`manage.py migrate` then `uvicorn gpt3dev.asgi:application`, on its own database.

    ``env`` overrides the inherited environment (``GPT3DEV_VAR_DIR`` is the work folder;
    the database is ``DATABASE_URL`` if set, else SQLite in the work folder).
    """

    def __init__(self, workdir: Path, **env: str) -> None:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        self.env = {
            **os.environ,
            "GPT3DEV_VAR_DIR": str(workdir),
            "DATABASE_URL": os.environ.get("DATABASE_URL") or f"sqlite:///{workdir / 'db.sqlite3'}",
            **env,
        }
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.process: subprocess.Popen | None = None
        self.started_at: float | None = None  # time.perf_counter() when uvicorn was spawned
        self.output_times: list[float] = []  # time.perf_counter() of each piece of output
        self._copier: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def migrate(self) -> float:
        """Run migrations; return the seconds they took."""
        start = time.perf_counter()
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=self.env,
                       check=True, capture_output=True, timeout=300)
        return time.perf_counter() - start

    def command(self) -> list[str]:
        """The server's command line (default settings: one uvicorn process)."""
        return [sys.executable, "-m", "uvicorn", "gpt3dev.asgi:application", "--host", "127.0.0.1",
                "--port", str(self.port)]

    def launch(self) -> None:
        """Spawn the server, its output copied to ``log_path`` by a thread that notes when
        each piece arrived (a progress bar's redraw counts: it ends in ``\\r``, not a newline)."""
        self.started_at = time.perf_counter()
        self.output_times = []
        self.process = subprocess.Popen(self.command(), cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
        self._copier = threading.Thread(target=self._copy_output, args=(self.process.stdout,),
                                        name="server-log", daemon=True)
        self._copier.start()

    def _copy_output(self, pipe: Any) -> None:
        with open(self.log_path, "ab", buffering=0) as log, pipe:
            while chunk := os.read(pipe.fileno(), 65536):
                self.output_times.append(time.perf_counter())
                log.write(chunk)

    def longest_silence(self, until: float) -> float:
        """The longest stretch, from launch to ``until`` (a ``time.perf_counter()``),
        in which the server printed nothing."""
        marks = [self.started_at or until, *(t for t in self.output_times if t < until), until]
        return max(b - a for a, b in zip(marks, marks[1:]))

    def wait_healthy(self, timeout: float = 120) -> float:
        """Poll /healthz until it answers 200; return seconds since launch."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                    return time.perf_counter() - (self.started_at or 0.0)
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the server did not answer in {timeout} s:\n{self.log_tail()}")

    def start(self, timeout: float = 120) -> UvicornServer:
        self.migrate()
        self.launch()
        self.wait_healthy(timeout)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._copier is not None:
            self._copier.join(timeout=10)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{self.log_tail()}")

    def __enter__(self) -> UvicornServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def first_answer(base_url: str, model: str, timeout: float = 600) -> None:
    """One tiny completion; it blocks while the server loads the model on first use."""
    response = httpx.post(f"{base_url}/v1/completions", timeout=timeout,
                          json={"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0})
    response.raise_for_status()


def measure_cold_start(server: UvicornServer, model: str, timeout: float = 600) -> dict[str, float]:
    """Launch ``server`` (already migrated) and time it: seconds to /healthz and to the
    first completion answer, both from process start, and the longest the server printed
    nothing meanwhile (a one-time conversion should say what it is doing)."""
    server.launch()
    healthy = server.wait_healthy(timeout)
    first_answer(server.base_url, model, timeout)
    now = time.perf_counter()
    return {"healthz_s": round(healthy, 3), "first_answer_s": round(now - (server.started_at or 0.0), 3),
            "longest_silence_s": round(server.longest_silence(now), 3)}


def resident_memory(pid: int) -> dict[str, float]:
    """Resident memory of a process and its children, in MB (10**6 bytes), now and peak."""
    import psutil

    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    rss = sum(p.memory_info().rss for p in procs)
    out = {"rss_mb": round(rss / 1e6, 1)}
    peak = _vm_hwm(pid)
    if peak is not None:
        out["peak_rss_mb"] = round(peak / 1e6, 1)
    return out


def _vm_hwm(pid: int) -> int | None:
    """Linux's peak resident set size (VmHWM) of one process, in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
