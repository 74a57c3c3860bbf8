"""Posting JSON to the server from tests, and reading an OpenAI-style error back.

One ``post`` for both ways the suite reaches the server: a base URL or a ``LiveServer``
(real HTTP through httpx, to a uvicorn process) or Django's test client (in process).
Either way the caller gets a response with ``status_code`` and ``json()``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx


def post(target: Any, path: str, body: Any, *, timeout: float = 300, headers: dict[str, str] | None = None,
         **extra: Any) -> Any:
    """POST ``body`` as JSON to ``path``. ``target``: a base URL, anything with a ``base_url``
    (a LiveServer), or a Django test client. A str or bytes body is sent as it is (a
    malformed body on purpose); ``extra`` goes to the Django client (``HTTP_…`` headers)."""
    if isinstance(target, str) or hasattr(target, "base_url"):
        base = target if isinstance(target, str) else target.base_url
        if isinstance(body, (str, bytes)):
            sent = {"Content-Type": "application/json"} | (headers or {})
            return httpx.post(f"{base}{path}", content=body, headers=sent, timeout=timeout)
        return httpx.post(f"{base}{path}", json=body, headers=headers, timeout=timeout)
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return target.post(path, data=raw, content_type="application/json", headers=headers, **extra)


def post_json(target: Any, path: str, body: Any, **kwargs: Any) -> tuple[int, dict]:
    """``post``, answered as (status, parsed body)."""
    response = post(target, path, body, **kwargs)
    return response.status_code, response.json()


def error_of(response: Any, status: int = 400) -> dict:
    """The ``error`` object of an OpenAI-style error answer with this status."""
    text = response.text if hasattr(response, "text") else response.content
    assert response.status_code == status, text
    return response.json()["error"]


def assert_invalid_value(error: dict, param: str) -> None:
    """A bad field's 400: ``param`` names the field and the message opens with it."""
    assert error["param"] == param, error
    assert error["message"].startswith(f"Invalid value for '{param}': "), error
