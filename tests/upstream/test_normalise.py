"""Error bodies of the servers a gateway fronts, each in OpenAI's shape."""

from __future__ import annotations

import pytest

from upstream.forward import normalised_error


@pytest.mark.parametrize("body, status, expected", [
    # vLLM (older): a flat object with an integer code
    ({"object": "error", "message": "too long", "type": "BadRequestError", "param": None, "code": 400}, 400,
     {"message": "too long", "type": "BadRequestError", "param": None, "code": None}),
    # OpenAI's own shape passes as it is
    ({"error": {"message": "no", "type": "invalid_request_error", "param": "n", "code": "invalid_value"}}, 400,
     {"message": "no", "type": "invalid_request_error", "param": "n", "code": "invalid_value"}),
    # Ollama: the error is a string
    ({"error": "model 'x' not found"}, 404,
     {"message": "model 'x' not found", "type": "invalid_request_error", "param": None, "code": None}),
    # FastAPI-style servers
    ({"detail": "Not authenticated"}, 401,
     {"message": "Not authenticated", "type": "authentication_error", "param": None, "code": None}),
    # nothing usable
    (["?"], 502, {"message": "The upstream server answered 502.", "type": "server_error", "param": None, "code": None}),
])
def test_error_bodies_are_normalised(body, status, expected):
    assert normalised_error(body, status) == {"error": expected}
