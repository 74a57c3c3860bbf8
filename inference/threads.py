"""Blocking torch work off the event loop, on a thread that ends with the work.

Why not a thread pool: on CPU, a long-lived thread that has run OpenMP work (an
embeddings forward, a model load) slows every later decode step of the generation
worker thread, while the same call on a thread that then exits leaves decoding
unchanged (measured: docs/benchmarks/engine-measurements.md). The reason is libgomp's:
each thread that starts parallel work keeps a team of worker threads, and while more
OpenMP threads exist than CPUs, idle workers stop spinning and sleep at once, so every
parallel operation of a step waits for its workers to wake. A fresh thread per call
costs well under a millisecond, far less than any forward pass; a thread that must stay
(a test's main thread) can give its workers back with :func:`release_openmp_workers`.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

OMP_PAUSE_HARD = 2  # omp_pause_hard: the workers' threads end


def call_in_fresh_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on a new thread, waited for; its result, or its exception
    raised here. For blocking callers (the engine's own load)."""
    outcome: dict[str, Any] = {}
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome["result"] = context.run(fn, *args, **kwargs)
        except BaseException as exc:  # raised in the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"torch-{getattr(fn, '__name__', 'work')}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def release_openmp_workers() -> bool:
    """End the OpenMP worker threads that the calling thread's parallel work started
    (OpenMP 5's ``omp_pause_resource_all``); False where the runtime lacks it. The
    thread's next parallel operation starts new ones."""
    try:
        runtime = ctypes.CDLL("libgomp.so.1")  # torch's own, already loaded (matched by its soname)
        return runtime.omp_pause_resource_all(OMP_PAUSE_HARD) == 0
    except (OSError, AttributeError):
        return False


async def run_in_fresh_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on a new thread; its result or exception, awaited."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()
    context = contextvars.copy_context()

    def settle(outcome: BaseException | None, result: Any) -> None:
        if future.done():  # the awaiting task was cancelled: nobody wants the outcome
            return
        if outcome is not None:
            future.set_exception(outcome)
        else:
            future.set_result(result)

    def target() -> None:
        try:
            result = context.run(fn, *args, **kwargs)
        except BaseException as exc:  # handed to the awaiting task, which raises it
            loop.call_soon_threadsafe(settle, exc, None)
        else:
            loop.call_soon_threadsafe(settle, None, result)

    threading.Thread(target=target, name=f"torch-{getattr(fn, '__name__', 'work')}", daemon=True).start()
    return await future
