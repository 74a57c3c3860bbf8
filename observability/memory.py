"""Hand freed heap memory back to the operating system after a large request.

Parsing and validating a multi-megabyte body builds millions of small Python objects.
When the request ends they are freed, but glibc's malloc keeps the pages it got for
them (in the main heap and in per-thread arenas, since the work runs on worker
threads), so the process's resident memory stays at its peak: 1 GB more after two
large bodies, measured. ``malloc_trim(0)`` returns the free pages of every arena.

It runs on a short-lived thread a moment after a request with a large body ends, at
most one at a time; ctypes releases the GIL around the call, so the event loop keeps
running. Where the C library is not glibc it does nothing.
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import Counter

from inference.memory import TRIM_AVAILABLE, give_back_freed_memory

logger = logging.getLogger("gpt3dev.memory")

LARGE_BODY_BYTES = 1024 * 1024  # requests with a bigger body trigger a trim when they end
TRIM_DELAY_SECONDS = 0.25  # let the request's objects go first

_pending = threading.Lock()
TRIMS = Counter("gpt3dev_heap_trims", "Heap trims (malloc_trim) after requests with a large body.")


def trim_now() -> bool:
    """Return free heap pages to the OS now; False where malloc_trim is not available."""
    if not give_back_freed_memory():
        return False
    TRIMS.inc()
    return True


def trim_soon() -> None:
    """Schedule one trim shortly (a no-op while one is already scheduled)."""
    if not TRIM_AVAILABLE or not _pending.acquire(blocking=False):
        return

    def work() -> None:
        try:
            time.sleep(TRIM_DELAY_SECONDS)
            trim_now()
        except Exception:  # never let housekeeping take anything down
            logger.exception("malloc_trim failed")
        finally:
            _pending.release()

    threading.Thread(target=work, name="gpt3dev-trim", daemon=True).start()


def after_request(content_length: int) -> None:
    """Called when a request ends: trim after a large body."""
    if content_length > LARGE_BODY_BYTES:
        trim_soon()
