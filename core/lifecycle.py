"""Whether this process is draining (shutting down): set by the composition root's
SIGTERM handling (``gpt3dev.shutdown``), read wherever a request's fate depends on it
(the access log tells a request cancelled by the shutdown, a 503, from one whose client
left, a 499)."""

from __future__ import annotations

import threading

_draining = threading.Event()


def is_draining() -> bool:
    return _draining.is_set()


def mark_draining() -> bool:
    """Mark the process as draining; False when it already was."""
    if _draining.is_set():
        return False
    _draining.set()
    return True


def reset_for_tests() -> None:
    _draining.clear()
