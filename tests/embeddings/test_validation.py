"""/v1/embeddings request errors (no model loads)."""

from __future__ import annotations

import json

import pytest

from tests.openai_schema import assert_matches_schema

pytestmark = pytest.mark.django_db

BODY = {"model": "all-MiniLM-L6-v2", "input": "hello"}


def post(client, body) -> tuple[int, dict]:
    response = client.post("/v1/embeddings", data=json.dumps(body), content_type="application/json")
    return response.status_code, response.json()


@pytest.mark.parametrize(
    "changes, param",
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["a", ""]}, "input"),
        ({"input": [[]]}, "input"),
        ({"input": [1, -2]}, "input"),
        ({"input": ["x"] * 2049}, "input"),
        ({"input": {"text": "x"}}, "input"),
        ({"encoding_format": "int8"}, "encoding_format"),
        ({"dimensions": 0}, "dimensions"),
        ({"model": 123}, "model"),
    ],
)
def test_embedding_field_errors(client, changes, param):
    status, body = post(client, BODY | changes)
    assert status == 400, body
    assert_matches_schema(body, "ErrorResponse")
    assert body["error"]["param"] == param
    assert body["error"]["message"].startswith(f"Invalid value for '{param}': "), body


def test_generation_model_for_embeddings_is_400(client):
    status, body = post(client, BODY | {"model": "SmolLM2-135M-Instruct"})
    assert status == 400 and body["error"]["param"] == "model"
    assert "/v1/chat/completions" in body["error"]["message"]


def test_disabled_backend_is_501(client, gpt3dev_settings):
    gpt3dev_settings["ENABLE_EMBEDDINGS_BACKEND"] = False
    status, body = post(client, BODY)
    assert status == 501
    assert_matches_schema(body, "ErrorResponse")
    assert "ENABLE_EMBEDDINGS_BACKEND" in body["error"]["message"]
