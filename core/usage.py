"""What one request used, said once by the code that served it.

The service that answers a request fills one :class:`Usage`: the served model, the
tokens it read (and how many of those came from the prefix cache), the tokens it wrote,
and when its first token came. The API key and the outcome (the answer's status) are
added by the middleware that knows them. When the request really ends (a stream's last
byte, or its client leaving) the access log's middleware hands that same object to every
consumer: the rate limiter settles its reservation from it, the metrics count it, the
access log writes it, the usage ledger stores it. The object travels on the request
(``request.usage``) and as an argument to the services; no consumer fills it, and none
finds it through a context variable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger("gpt3dev.request")

CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away before the answer ended"


@dataclass
class Usage:
    endpoint: str = ""  # the route's name ("chat-completions", "embeddings", ...)
    model: str | None = None  # a served registry id (never a client's made-up name)
    input_tokens: int | None = None  # None: nothing was read (refused, or not reported upstream)
    cached_tokens: int = 0  # of input_tokens, served from the prefix cache
    output_tokens: int = 0
    ttft: float | None = None  # seconds from the request's start to its first token
    key_name: str | None = None  # the API key's name (None on an open server)
    key_id: str | None = None  # the key's stable id ("db:7" for a stored key, "env:NAME" for a set one)
    status: int = 0  # the answer's HTTP status (499: the client left)
    path: str = ""  # the request's path (the usage ledger records API routes only)
    started: float = field(default_factory=time.monotonic)
    on_end: list[Callable[[Usage], None]] = field(default_factory=list)  # this request's own consumers

    @property
    def total_tokens(self) -> int:
        return (self.input_tokens or 0) + self.output_tokens

    @property
    def charged_tokens(self) -> int:
        """What the request is charged: the tokens it used; one whose client left (499)
        the prompt and what was generated before it left; a failed one nothing."""
        if self.status < 400 or self.status == CLIENT_CLOSED_REQUEST:
            return self.total_tokens
        return 0

    def read(self, model: str, input_tokens: int, cached_tokens: int = 0) -> None:
        """The served model read ``input_tokens`` (``cached_tokens`` of them from the cache)."""
        self.model = model
        self.input_tokens = input_tokens
        self.cached_tokens = cached_tokens

    def first_token(self) -> None:
        if self.ttft is None:
            self.ttft = time.monotonic() - self.started


def of(request) -> Usage:
    """The usage of ``request`` (made on first use; the access log's middleware makes it
    when the request arrives, so it exists even for a request refused before any view)."""
    usage = getattr(request, "usage", None)
    if usage is None:
        usage = request.usage = Usage()
    return usage


_consumers: list[Callable[[Usage], None]] = []
_database_consumers: list[Callable[[Usage], None]] = []  # those of _consumers that query the database


def subscribe(consumer: Callable[[Usage], None], *, database: bool = False) -> None:
    """Call ``consumer(usage)`` when any request ends (metrics, the usage ledger);
    ``database``: it queries the database, so async code calls it on a thread."""
    if consumer not in _consumers:
        _consumers.append(consumer)
    if database and consumer not in _database_consumers:
        _database_consumers.append(consumer)


def unsubscribe(consumer: Callable[[Usage], None]) -> None:
    """Stop calling ``consumer`` (the benchmark measures a request with and without one)."""
    if consumer in _consumers:
        _consumers.remove(consumer)
    if consumer in _database_consumers:
        _database_consumers.remove(consumer)


def needs_thread(usage: Usage) -> bool:
    """Whether finishing ``usage`` may touch the database (then not on the event loop)."""
    return bool(usage.on_end) or bool(_database_consumers)


def finish(usage: Usage) -> None:
    """The request has ended: its own consumers first (the rate limiter's settlement),
    then every subscriber. A consumer's failure is logged and does not stop the others."""
    for consumer in (*usage.on_end, *_consumers):
        try:
            consumer(usage)
        except Exception:
            logger.exception("usage consumer %r failed", consumer)
