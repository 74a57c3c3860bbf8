"""What a one-time conversion (GGUF to safetensors, float to int8/int4) shows while it runs.

A first request can wait half a minute or more for these, and a terminal that shows a
finished bar and then nothing looks like a hung server. So each phase logs a line when
it starts and one with its duration when it ends, repeats its line every few seconds
while it runs with no progress bar on screen (some phases are one library call that
reports nothing), and work with a known size (bytes hashed, tensors quantized) draws a
bar (huggingface_hub's tqdm, so ``HF_HUB_DISABLE_PROGRESS_BARS`` turns bars off as it
does the downloads').
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

HEARTBEAT_S = 4.0  # the longest a running phase stays silent


@contextmanager
def phase(log: logging.Logger, what: str, heartbeat_s: float = HEARTBEAT_S) -> Iterator[None]:
    """Log ``what`` as it starts, every ``heartbeat_s`` while it runs (unless a progress
    bar is showing), and with how long it took when it ends."""
    log.info("%s ...", what)
    start = time.perf_counter()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(heartbeat_s):
            if not _bar_showing():
                log.info("%s: still running, %.0f s so far", what, time.perf_counter() - start)

    ticker = threading.Thread(target=beat, name="progress-heartbeat", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
    log.info("%s: done in %.1f s", what, time.perf_counter() - start)


def _bar_showing() -> bool:
    """Whether a tqdm bar is open (its own redraws already show progress)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return False
    return any(not getattr(b, "disable", False) for b in list(getattr(tqdm, "_instances", ())))


def bar(total: int, desc: str, unit: str, **kwargs: Any) -> Any:
    """A progress bar over ``total`` units (a context manager with ``update``)."""
    from huggingface_hub.utils import tqdm

    if unit == "B":
        kwargs.setdefault("unit_scale", True)
        kwargs.setdefault("unit_divisor", 1024)
    return tqdm(total=total, desc=desc, unit=unit, **kwargs)
