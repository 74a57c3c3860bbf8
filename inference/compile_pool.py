"""Where grammars compile: a few threads with big stacks, and a bounded queue.

llguidance compiles on the calling thread and cannot be interrupted, so what bounds
the work is how many compiles may run at once (``workers``) and wait (``queue``); a
caller that stops waiting leaves its compile running, still holding its worker, until
it ends by itself. Each worker's stack is :data:`STACK_BYTES`, far more than the
deepest grammar :mod:`inference.grammar_checks` lets through needs (2,500 levels at
2-4 KB a level: 10 MB, more than a default 8 MB thread has). It is address space
reserved, not memory: pages are committed only as deep as a compile reaches.

Workers are started when a job arrives and exit once the queue is empty, so an idle
model holds no compile threads (and a model unloaded leaves none behind).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import EngineOverloaded

STACK_BYTES = 64 << 20


class CompileJob:
    """One compile: its caller waits for ``started`` and then ``done``."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.started = threading.Event()
        self.done = threading.Event()
        self.started_at = 0.0  # time.monotonic() when a worker took it
        self.result: Any = None
        self.waiters = 1  # callers waiting for it (the compiler counts them)


class CompilePool:
    """At most ``workers`` compile threads; at most ``queue`` jobs waiting for one."""

    def __init__(self, *, workers: int, queue: int, name: str = "grammar-compile") -> None:
        self.workers = max(1, workers)
        self.queue_size = max(0, queue)
        self._name = name
        self._lock = threading.Lock()
        self._jobs: collections.deque[CompileJob] = collections.deque()
        self._threads = 0
        self._busy = 0

    def submit(self, fn: Callable[[], Any]) -> CompileJob:
        """Queue ``fn``; EngineOverloaded (a 429) when the queue is full."""
        job = CompileJob(fn)
        with self._lock:
            idle = self._threads - self._busy
            if len(self._jobs) - idle >= self.queue_size and self._threads >= self.workers:
                raise EngineOverloaded(
                    f"grammar compilation is busy ({self._busy} compiling, {len(self._jobs)} waiting); retry later",
                    retry_after=2.0,
                )
            self._jobs.append(job)
            if self._threads < self.workers and self._threads - self._busy < len(self._jobs):
                self._threads += 1
                try:
                    self._start_worker()
                except RuntimeError as exc:  # no thread to be had (a limit on threads or memory)
                    self._threads -= 1
                    self._jobs.remove(job)
                    raise EngineOverloaded(f"cannot start a grammar compile thread: {exc}", retry_after=2.0) from None
        return job

    def withdraw(self, job: CompileJob) -> bool:
        """Take a job that no worker has started off the queue; False if it has started."""
        with self._lock:
            try:
                self._jobs.remove(job)
            except ValueError:
                return False
            return True

    @property
    def waiting(self) -> int:
        return len(self._jobs)

    @property
    def running(self) -> int:
        return self._busy

    def _start_worker(self) -> None:
        # The stack size is process-wide: set it only while this thread is created
        # (a thread someone else starts in that instant gets a big stack too: harmless,
        # it is address space).
        previous = threading.stack_size(STACK_BYTES)
        try:
            threading.Thread(target=self._work, name=self._name, daemon=True).start()
        finally:
            threading.stack_size(previous)

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._threads -= 1
                    return
                job = self._jobs.popleft()
                self._busy += 1
            job.started_at = time.monotonic()
            job.started.set()
            try:
                job.result = job.fn()
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                job.result = exc
            finally:
                with self._lock:
                    self._busy -= 1
                job.done.set()
