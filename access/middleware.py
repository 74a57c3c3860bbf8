"""API-key authentication and per-key request limits for every /v1/ route.

Runs after CORS (a preflight never needs a key; a 401 still carries CORS headers) and
answers its errors in OpenAI's shape through :func:`core.errors.error_response`.
It attaches ``request.api_key`` (a :class:`access.keys.Principal`, or None on an open
server), ``request.rate_limit`` (a :class:`access.ratelimit.LimitState`) and
``request.quota`` (a :class:`access.quotas.QuotaState`, or None for a key without a
token quota), and puts the ``x-ratelimit-*`` headers on every answer. Natively sync and
async, so streaming views never hop threads because of it; its database work is one hop
per request.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponseBase

from access import quotas
from access.keys import AuthFailure, authenticate
from access.ratelimit import admit_request, settle_tokens
from core import usage
from core.errors import APIError, error_response
from core.middleware import DualModeMiddleware, is_api_path


def _admit(request: HttpRequest) -> None:
    """Authenticate (a 401 raises AuthFailure), name the key in the request's usage, check
    its token quotas, then count the request against the key's limits (a 429 raises
    APIError)."""
    request.api_key = principal = authenticate(request.headers.get("Authorization"))
    if principal is None:
        return
    used = usage.of(request)
    used.key_name, used.key_id = principal.name, principal.bucket
    # First: a key out of quota does not spend a request of its minute.
    request.quota = quota = quotas.admit(principal)
    request.rate_limit = state = admit_request(principal)
    if state.principal.tokens_per_minute:
        # Runs when the answer really ends (a stream's last byte, or the client leaving).
        used.on_end.append(lambda done: settle_tokens(state, done.charged_tokens))
    if quota is not None:
        used.on_end.append(lambda done: quotas.settle(quota, done.charged_tokens))


def _unauthorized(message: str) -> HttpResponseBase:
    error = APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": 'Bearer realm="gpt3dev"'})
    return error_response(error)


class APIKeyMiddleware(DualModeMiddleware):
    @staticmethod
    def _guarded(request: HttpRequest) -> bool:
        return is_api_path(request.path) and request.method != "OPTIONS"

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        request.api_key, request.rate_limit, request.quota = None, None, None
        if not self._guarded(request):
            return self.get_response(request)
        try:
            _admit(request)
        except AuthFailure as exc:
            return _unauthorized(str(exc))
        except APIError as exc:
            return error_response(exc)
        return self._finish(request, self.get_response(request))

    async def __acall__(self, request: HttpRequest):
        request.api_key, request.rate_limit, request.quota = None, None, None
        if not self._guarded(request):
            return await self.get_response(request)
        try:
            await sync_to_async(_admit)(request)
        except AuthFailure as exc:
            return _unauthorized(str(exc))
        except APIError as exc:
            return error_response(exc)
        return self._finish(request, await self.get_response(request))

    @staticmethod
    def _finish(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        headers = {}
        if request.rate_limit is not None:
            headers.update(request.rate_limit.headers())
        if request.quota is not None:
            headers.update(request.quota.headers())
        for name, value in headers.items():
            if name not in response:
                response[name] = value
        return response
