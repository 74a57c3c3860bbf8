"""Blocking torch work off the event loop, on a thread that ends with the work.

Why not a thread pool: on CPU, a long-lived thread that has run OpenMP work (an
embeddings forward, a model load) slows every later decode step of the generation
worker thread, while the same call on a thread that then exits leaves decoding
unchanged (measured: docs/benchmarks/engine-measurements.md). A fresh thread per call costs
well under a millisecond, far less than any forward pass.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


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
