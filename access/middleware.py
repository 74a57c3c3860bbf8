"""API-key authentication and per-key request limits for every /v1/ route.

Runs after CORS (a preflight never needs a key; a 401 still carries CORS headers) and
answers its errors in OpenAI's shape through :func:`core.errors.error_response`.
It attaches ``request.api_key`` (a :class:`access.keys.Principal`, or None on an open
server) and ``request.rate_limit`` (a :class:`access.ratelimit.LimitState`), and puts
the ``x-ratelimit-*`` headers on every answer. Natively sync and async, so streaming
views never hop threads because of it; its database work is one hop per request.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponseBase

from access.keys import AuthFailure, Principal, authenticate
from access.ratelimit import LimitState, admit_request, settle_tokens
from observability.accesslog import CLIENT_CLOSED_REQUEST
from core.errors import APIError, error_response
from core.middleware import DualModeMiddleware, is_api_path


def _admit(authorization: str | None) -> tuple[Principal | None, LimitState | None]:
    principal = authenticate(authorization)
    if principal is None:
        return None, None
    try:
        return principal, admit_request(principal)
    except APIError as exc:
        exc.principal = principal  # so the access log names the key that hit its limit
        raise


def charged_tokens(record) -> int:
    """What a request is charged when it ends: the tokens it used; a disconnected one
    (499) the prompt and the tokens generated before its client left; a failed one 0."""
    if record.status < 400 or record.status == CLIENT_CLOSED_REQUEST:
        return record.used_tokens
    return 0


def _unauthorized(message: str) -> HttpResponseBase:
    error = APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": 'Bearer realm="gpt3dev"'})
    return error_response(error)


def _limited(request: HttpRequest, exc: APIError) -> HttpResponseBase:
    record = getattr(request, "record", None)
    principal = getattr(exc, "principal", None)
    if record is not None and principal is not None:
        record.key_name = principal.name
    return error_response(exc)


class APIKeyMiddleware(DualModeMiddleware):
    @staticmethod
    def _guarded(request: HttpRequest) -> bool:
        return is_api_path(request.path) and request.method != "OPTIONS"

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        request.api_key, request.rate_limit = None, None
        if not self._guarded(request):
            return self.get_response(request)
        try:
            request.api_key, request.rate_limit = _admit(request.headers.get("Authorization"))
        except AuthFailure as exc:
            return _unauthorized(str(exc))
        except APIError as exc:
            return _limited(request, exc)
        self._attach(request)
        return self._finish(request, self.get_response(request))

    async def __acall__(self, request: HttpRequest):
        request.api_key, request.rate_limit = None, None
        if not self._guarded(request):
            return await self.get_response(request)
        try:
            request.api_key, request.rate_limit = await sync_to_async(_admit)(request.headers.get("Authorization"))
        except AuthFailure as exc:
            return _unauthorized(str(exc))
        except APIError as exc:
            return _limited(request, exc)
        self._attach(request)
        return self._finish(request, await self.get_response(request))

    @staticmethod
    def _attach(request: HttpRequest) -> None:
        """Before the view runs (so a request its client abandons still has them): the
        key's name in the access log, and the settling of its token reservation."""
        principal, state = request.api_key, request.rate_limit
        record = getattr(request, "record", None)
        if principal is None or record is None:
            return
        record.key_name = principal.name
        if state is not None and state.principal.tokens_per_minute:
            # The access log runs this when the answer really ends (a stream's last
            # byte, or the client leaving).
            record.on_end.append(lambda rec: settle_tokens(state, charged_tokens(rec)))

    @staticmethod
    def _finish(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        state = request.rate_limit
        if state is None:
            return response
        for name, value in state.headers().items():
            if name not in response:
                response[name] = value
        return response
