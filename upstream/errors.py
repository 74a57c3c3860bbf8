"""How an upstream server's error reaches a client: in OpenAI's shape, and nothing else.

An upstream's error body is written by a server we do not control, and may hold an HTML
page, a stack trace, or our own ``Authorization`` header echoed back. So only a message
from a recognised JSON error shape passes (OpenAI's ``{"error": {...}}``, vLLM's flat
``{"object": "error", ...}``, Ollama's ``{"error": "text"}``, FastAPI's
``{"detail": "text"}``), capped in length and with anything credential-like redacted;
any other body becomes a fixed message that gives the upstream's status.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from core.errors import ERROR_TYPES, error_payload

MAX_MESSAGE_CHARS = 2000
REDACTED = "[redacted]"

_CREDENTIALS = [  # (pattern, replacement)
    # Authorization: Bearer <token> / Basic <token>, wherever it appears
    (re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=:-]{4,}"), rf"\1\2{REDACTED}"),
    # key=value, "key": "value", key: value for names that hold secrets
    (re.compile(r"(?i)\b(authorization|proxy-authorization|api[_-]?key|x-api-key|access[_-]?token|secret|"
                r"password|passwd|pwd|cookie|set-cookie|session(?:id)?)(\"?'?\s*[:=]\s*\"?'?)[^\s\"',;&}]+"),
     rf"\1\2{REDACTED}"),
    # OpenAI-style and similar keys, and credentials inside URLs
    (re.compile(r"\b(sk|pk|rk|hf|gsk|xai)([-_])[A-Za-z0-9_-]{8,}"), rf"\1\2{REDACTED}"),
    (re.compile(r"(://)[^/\s:@]+:[^/\s@]+@"), rf"\1{REDACTED}@"),
    # long random-looking tokens: URL-safe ones long and mixed enough not to be a
    # model's name, then hex or base64 with letters and digits
    (re.compile(r"(?<![\w-])(?=[\w-]*\d)(?=[\w-]*[A-Z])(?=[\w-]*[a-z])[\w-]{40,}"), REDACTED),
    (re.compile(r"(?<![A-Za-z0-9+/=])(?=[A-Za-z0-9+/=]*\d)(?=[A-Za-z0-9+/=]*[A-Za-z])[A-Za-z0-9+/=]{32,}"), REDACTED),
]
_SAFE_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")
_SAFE_PARAM = re.compile(r"^[A-Za-z0-9_.\[\]-]{1,128}$")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the given secrets and anything credential-like replaced."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _CREDENTIALS:
        text = pattern.sub(replacement, text)
    return text


def _message(obj: Any) -> tuple[str | None, dict[str, Any]]:
    """(message, the dict holding type/param/code) from a recognised error shape."""
    if not isinstance(obj, dict):
        return None, {}
    err = obj.get("error")
    if isinstance(err, dict) and isinstance(err.get("message"), str):  # OpenAI, llama.cpp
        return err["message"], err
    if isinstance(err, str):  # Ollama, TGI
        return err, {}
    if obj.get("object") == "error" and isinstance(obj.get("message"), str):  # vLLM
        return obj["message"], obj
    if isinstance(obj.get("detail"), str):  # FastAPI
        return obj["detail"], {}
    return None, {}


def normalised_error(obj: Any, status: int, *, secrets: Iterable[str] = ()) -> dict[str, Any]:
    """Any server's error body (parsed JSON, or None) in OpenAI's shape, safe to show."""
    message, fields = _message(obj)
    message = redact(message.strip(), secrets)[:MAX_MESSAGE_CHARS] if message and message.strip() else ""
    if not message:
        message = f"The upstream server answered {status}."
    kind, param, code = fields.get("type"), fields.get("param"), fields.get("code")
    kind = kind if isinstance(kind, str) and _SAFE_WORD.match(kind) else ERROR_TYPES.get(status, "server_error")
    param = param if isinstance(param, str) and _SAFE_PARAM.match(param) else None
    code = code if isinstance(code, str) and _SAFE_WORD.match(code) else None
    return error_payload(message, type=kind, param=param, code=code)
