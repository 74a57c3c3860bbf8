"""Graceful shutdown: on SIGTERM stop admitting, let in-flight answers finish, then exit.

uvicorn already does most of it: on SIGTERM (or SIGINT) it closes its listening
sockets, closes idle keep-alive connections, waits for the requests in flight and then
exits (``--timeout-graceful-shutdown`` bounds the wait; Django has no ASGI lifespan).
This module adds what uvicorn cannot know:

* :func:`install_signal_handlers` chains a handler in front of the server's own: it
  marks the process as draining, then hands the signal on, so uvicorn still drives the
  shutdown. uvicorn installs its handlers after it imports the application, so this
  happens on the first request (in the event loop's thread, the main one).
* :class:`DrainMiddleware` answers every request that still reaches Django while
  draining (one that was already queued on an open connection) with a 503 and
  ``Connection: close``; /readyz turns 503 too, so a load balancer stops routing here.
* :class:`GracefulASGI` tracks the requests in flight and, ``SHUTDOWN_GRACE_SECONDS``
  after the signal, cancels those still running (a stream gets closed), so the process
  exits within the grace period under any ASGI server.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

from django.conf import settings
from django.http import HttpRequest

from core.errors import APIError, error_response
from core.lifecycle import is_draining, mark_draining
from core.middleware import DualModeMiddleware, is_api_path

logger = logging.getLogger("gpt3dev.shutdown")

_apps: list[GracefulASGI] = []


def start_draining() -> None:
    """Stop admitting requests; cancel what still runs after the grace period."""
    if not mark_draining():
        return
    grace = settings.GPT3DEV["SHUTDOWN_GRACE_SECONDS"]
    logger.warning("Shutting down: no new requests; in-flight ones have %s s to finish.", grace)
    for app in _apps:
        app.schedule_cancel(grace)



def install_signal_handlers() -> None:
    """Chain our SIGTERM/SIGINT handler in front of the server's own (uvicorn's, which it
    installs before it imports the application). Only where a server already handles
    the signal: with the default action the process would just die anyway."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous) or getattr(previous, "_gpt3dev_drain", False):
            continue

        def handler(signum, frame, previous=previous):
            start_draining()
            previous(signum, frame)

        handler._gpt3dev_drain = True
        try:
            signal.signal(sig, handler)
        except (ValueError, OSError):
            return


class GracefulASGI:
    """ASGI wrapper that knows the HTTP requests in flight, to cancel them after the grace."""

    def __init__(self, app) -> None:
        self.app = app
        self.tasks: set[asyncio.Task] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        _apps.append(self)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.loop is None:
            install_signal_handlers()
        self.loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        try:
            return await self.app(scope, receive, send)
        finally:
            if task is not None:
                self.tasks.discard(task)

    def schedule_cancel(self, grace: float) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(loop.call_later, grace, self._cancel_all)

    def _cancel_all(self) -> None:
        if self.tasks:
            logger.error("Grace period over: cancelling %d request(s) still running.", len(self.tasks))
        for task in list(self.tasks):
            task.cancel()


class DrainMiddleware(DualModeMiddleware):
    """503 for every request that reaches Django after the shutdown signal."""

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        if is_draining() and self._refused(request):
            return self._refusal()
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest):
        if is_draining() and self._refused(request):
            return self._refusal()
        return await self.get_response(request)

    @staticmethod
    def _refused(request: HttpRequest) -> bool:
        return is_api_path(request.path) or request.path == "/readyz"

    @staticmethod
    def _refusal():
        return error_response(
            APIError(
                503,
                "The server is shutting down and admits no new requests; retry on another instance.",
                code="server_shutting_down",
                headers={"Retry-After": "5", "Connection": "close"},
            )
        )
