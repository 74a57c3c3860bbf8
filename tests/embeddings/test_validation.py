"""/v1/embeddings request errors (no model loads)."""

from __future__ import annotations

import pytest

from tests.api import assert_invalid_value, post_json
from tests.openai_schema import assert_matches_schema

pytestmark = pytest.mark.django_db

BODY = {"model": "all-MiniLM-L6-v2", "input": "hello"}


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
    status, body = post_json(client, "/v1/embeddings", BODY | changes)
    assert status == 400, body
    assert_matches_schema(body, "ErrorResponse")
    assert_invalid_value(body["error"], param)


def test_generation_model_for_embeddings_is_400(client):
    status, body = post_json(client, "/v1/embeddings", BODY | {"model": "SmolLM2-135M-Instruct"})
    assert status == 400 and body["error"]["param"] == "model"
    assert "/v1/chat/completions" in body["error"]["message"]


def test_disabled_backend_is_501(client, gpt3dev_settings):
    gpt3dev_settings["ENABLE_EMBEDDINGS_BACKEND"] = False
    status, body = post_json(client, "/v1/embeddings", BODY)
    assert status == 501
    assert_matches_schema(body, "ErrorResponse")
    assert "ENABLE_EMBEDDINGS_BACKEND" in body["error"]["message"]
