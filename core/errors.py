"""The one place that builds OpenAI error payloads.

Every non-2xx answer under /v1/ is ``{"error": {"message", "type", "param", "code"}}``:
validation errors, unknown models, engine errors and Django's own 404/405/413/500 all
come through :func:`error_response`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.http import JsonResponse
from rest_framework.exceptions import ErrorDetail

from inference import errors as engine_errors

logger = logging.getLogger("gpt3dev.errors")

# OpenAI's error type for each status we answer with.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    501: "invalid_request_error",
    503: "service_unavailable_error",
}


class APIError(Exception):
    """An error answer, raised anywhere below a view and rendered by the middleware."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ERROR_TYPES.get(status, "invalid_request_error")
        self.headers = dict(headers or {})

    def payload(self) -> dict[str, Any]:
        return error_payload(self.message, type=self.type, param=self.param, code=self.code)


def error_payload(message: str, *, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(error: APIError) -> JsonResponse:
    response = JsonResponse(error.payload(), status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    response.openai_error = True  # the middleware leaves it alone
    return response


def model_not_found(model_id: str) -> APIError:
    return APIError(
        404,
        f"The model '{model_id}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def from_engine_error(exc: engine_errors.EngineError) -> APIError:
    """Map an engine exception to the API error a client sees."""
    if isinstance(exc, engine_errors.InvalidInput):
        if exc.param and exc.code != "context_length_exceeded":  # that one keeps OpenAI's own wording
            return invalid_value(exc.param, str(exc), code=exc.code)
        return APIError(400, str(exc), param=exc.param, code=exc.code)
    if isinstance(exc, engine_errors.EngineOverloaded):
        retry = max(1, round(exc.retry_after))
        return APIError(
            429,
            str(exc) or "The server is overloaded; retry later.",
            code="server_overloaded",
            headers={"Retry-After": str(retry)},
        )
    if isinstance(exc, engine_errors.ModelUnavailable):
        return APIError(503, str(exc), param="model", code="model_unavailable")
    logger.exception("engine error", exc_info=exc)
    return APIError(500, "The engine failed while serving this request.", code="engine_error")


def internal_error() -> APIError:
    return APIError(500, "The server had an error while processing your request.", code="internal_error")


def invalid_value(param: str, message: str, *, code: str | None = None) -> APIError:
    """The one form of every field error: a 400 ``Invalid value for 'param': message``."""
    prefix = f"Invalid value for '{param}': "
    return APIError(400, message if message.startswith(prefix) else prefix + message, param=param, code=code)


def validation_error(detail: Any) -> APIError:
    """Turn a DRF ``ValidationError.detail`` into a 400 naming the first bad field."""
    param, message = _first_error(detail, "")
    if not param:
        return APIError(400, message, code=_code_of(detail))
    return invalid_value(param, message, code=_code_of(detail))


def _first_error(detail: Any, path: str) -> tuple[str, str]:
    """Walk DRF's nested error detail to the first message and its field path."""
    if isinstance(detail, Mapping):
        for key, value in detail.items():
            if key in ("non_field_errors", "__all__"):
                return _first_error(value, path)
            return _first_error(value, _join(path, key))
    elif isinstance(detail, list):
        for index, item in enumerate(detail):
            if isinstance(item, (str, ErrorDetail)):
                return path, str(item)
            if item:
                return _first_error(item, _join(path, index))
    else:
        return path, str(detail)
    return path, "Invalid request."


def _join(path: str, key: Any) -> str:
    if isinstance(key, int) or str(key).isdigit():
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _code_of(detail: Any) -> str | None:
    """OpenAI error codes we set on purpose survive; DRF's own codes become null."""
    while isinstance(detail, (Mapping, list)) and detail:
        detail = next(iter(detail.values())) if isinstance(detail, Mapping) else detail[0]
    code = getattr(detail, "code", None)
    return code if code in {"context_length_exceeded", "model_not_found", "invalid_value"} else None
