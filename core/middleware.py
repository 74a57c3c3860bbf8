"""Middleware that keeps every answer under /v1/ in OpenAI's error shape.

Views raise :class:`core.errors.APIError` (or an engine error) and this turns it into
a JSON answer; anything else that escapes becomes a 500 without a traceback. Answers
Django builds itself (404 for an unknown route, 405, 413, the 500 page) are rewritten.
It is natively sync and async, so streaming views never hop threads because of it.
"""

from __future__ import annotations

import logging

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.http import HttpRequest, HttpResponseBase

from core.errors import APIError, error_response, from_engine_error, internal_error
from inference.errors import EngineError

logger = logging.getLogger("gpt3dev.request")

API_PREFIX = "/v1/"
# vLLM's and Cohere's routes outside /v1/: the same keys, limits and error shape.
ROOT_API_PATHS = frozenset({"/tokenize", "/detokenize", "/rerank", "/v2/rerank", "/score"})


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIX) or path == API_PREFIX.rstrip("/") or path in ROOT_API_PATHS


def exception_to_error(exc: BaseException) -> APIError:
    """The API error for any exception raised while serving an API request."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, EngineError):
        return from_engine_error(exc)
    if isinstance(exc, RequestDataTooBig):
        return APIError(413, "The request body is too large.", code="request_too_large")
    logger.error("unhandled error", exc_info=exc)
    return internal_error()


def _rewrite(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    if response.status_code < 400 or getattr(response, "openai_error", False):
        return response
    if not is_api_path(request.path):
        return response
    status = response.status_code
    if status == 404:
        error = APIError(404, f"Unknown route: {request.method} {request.path}", code="not_found")
    elif status == 405:
        allowed = response.get("Allow", "")
        error = APIError(
            405,
            f"Method {request.method} is not allowed on {request.path}"
            + (f"; allowed: {allowed}." if allowed else "."),
            code="method_not_allowed",
            headers={"Allow": allowed} if allowed else None,
        )
    elif status == 413:
        error = APIError(413, "The request body is too large.", code="request_too_large")
    elif status >= 500:
        error = internal_error()
    elif status == 400 and _host_refused(request):
        error = APIError(
            400, "The Host header names a host this server does not serve (ALLOWED_HOSTS).", code="disallowed_host"
        )
    else:
        error = APIError(status, "The request could not be processed.")
    return error_response(error)


def _host_refused(request: HttpRequest) -> bool:
    try:
        request.get_host()
    except DisallowedHost:
        return True
    return False


class DualModeMiddleware:
    """Base of this project's middleware: natively sync and async (it is a coroutine
    function exactly when the handler below it is), so an async streaming view never
    hops threads because of a middleware. Subclasses define ``__call__``/``__acall__``."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)


class OpenAIErrorMiddleware(DualModeMiddleware):
    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        return _rewrite(request, self.get_response(request))

    async def __acall__(self, request: HttpRequest):
        return _rewrite(request, await self.get_response(request))

    def process_exception(self, request: HttpRequest, exception: Exception):
        if isinstance(exception, APIError) or is_api_path(request.path):
            return error_response(exception_to_error(exception))
        return None
