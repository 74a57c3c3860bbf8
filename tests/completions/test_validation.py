"""Every invalid field of the generation endpoints is a 400 naming it (no model loads)."""

from __future__ import annotations

import json

import pytest

from tests.api import assert_invalid_value, post_json
from tests.openai_schema import assert_matches_schema

pytestmark = pytest.mark.django_db

MODEL = "SmolLM2-135M-Instruct"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": MODEL, "prompt": "hi"}


@pytest.mark.parametrize(
    "changes, param",
    [
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"n": 0}, "n"),
        ({"n": 129}, "n"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"stop": 5}, "stop"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"frequency_penalty": -2.5}, "frequency_penalty"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"10": 101}}, "logit_bias"),
        ({"logprobs": 6}, "logprobs"),
        ({"suffix": "def"}, "suffix"),
        ({"best_of": 1, "n": 2}, "best_of"),
        ({"best_of": 2, "stream": True}, "best_of"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [1, "a"]}, "prompt"),
        ({"prompt": {"text": "x"}}, "prompt"),
        ({"n": 10**6}, "n"),
        ({"n": 17}, "n"),  # over MAX_N (16): the server's own cap, the same form
        ({"best_of": 17}, "best_of"),
        ({"model": None}, "model"),
        ({"model": 123}, "model"),
        ({"model": True}, "model"),
        ({"model": ["SmolLM2-135M-Instruct"]}, "model"),
    ],
)
def test_completion_field_errors(client, changes, param):
    status, body = post_json(client, "/v1/completions", COMPLETION | changes)
    assert status == 400, body
    assert_matches_schema(body, "ErrorResponse")
    assert_invalid_value(body["error"], param)
    assert body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "changes, param",
    [
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
         "messages[0].content[0].type"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
         "response_format.json_schema.name"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}},
         "response_format.json_schema.schema"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]},
         "tools[1].function.name"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
         "tools[0].function.parameters"),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}],
          "tool_choice": {"type": "function", "function": {"name": "g"}}},
         "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"functions": [{"name": "f"}], "function_call": {"name": "g"}}, "function_call"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}], "guided_regex": "a+"}, "guided_regex"),
        ({"response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a"}}, "structured_outputs"),
        ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs"),
        ({"guided_choice": []}, "guided_choice"),
        ({"guided_json": "{not json"}, "guided_json"),
        ({"messages": [{"role": "user", "content": "x",
                        "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}]},
         "messages[0].tool_calls"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"n": 0}, "n"),
        ({"n": 17}, "n"),
        ({"model": 123}, "model"),
    ],
)
def test_chat_field_errors(client, changes, param):
    status, body = post_json(client, "/v1/chat/completions", CHAT | changes)
    assert status == 400, body
    assert_matches_schema(body, "ErrorResponse")
    assert_invalid_value(body["error"], param)
    assert param.split(".")[0].split("[")[0] in body["error"]["message"]


def test_unknown_model_is_404(client):
    status, body = post_json(client, "/v1/chat/completions", CHAT | {"model": "gpt-4o"})
    assert status == 404
    assert body["error"]["code"] == "model_not_found"


def test_embeddings_model_for_chat_says_which_endpoint(client):
    status, body = post_json(client, "/v1/chat/completions", CHAT | {"model": "all-MiniLM-L6-v2"})
    assert status == 400 and body["error"]["param"] == "model"
    assert "/v1/embeddings" in body["error"]["message"]


def test_non_chat_model_for_chat_says_use_completions(client):
    from models_api.models import ModelEntry

    ModelEntry.objects.filter(model_id="GPT-2").update(enabled=True)
    status, body = post_json(client, "/v1/chat/completions", CHAT | {"model": "GPT-2"})
    assert status == 400 and body["error"]["param"] == "model"
    assert "/v1/completions" in body["error"]["message"]


@pytest.mark.parametrize(
    "raw, status",
    [
        ("{not json", 400),
        ("[1, 2]", 400),
        ('"a string"', 400),
        ("[" * 100000 + "]" * 100000, 400),
    ],
)
def test_malformed_bodies(client, raw, status):
    got, body = post_json(client, "/v1/completions", raw)
    assert got == status
    assert_matches_schema(body, "ErrorResponse")


def test_empty_json_body_is_400(client):
    # the test client drops the content type of an empty body; real clients send it
    response = client.generic("POST", "/v1/completions", b"", CONTENT_TYPE="application/json")
    assert response.status_code == 400
    assert "empty" in response.json()["error"]["message"]


def test_wrong_content_type_is_415(client):
    response = client.post("/v1/completions", data="prompt=hi", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert_matches_schema(response.json(), "ErrorResponse")


def test_body_over_the_limit_is_413(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    response = client.post("/v1/completions", data=json.dumps(COMPLETION | {"prompt": "x" * 4096}),
                           content_type="application/json")
    assert response.status_code == 413
    assert_matches_schema(response.json(), "ErrorResponse")


def test_get_on_a_post_route_is_405(client):
    response = client.get("/v1/chat/completions")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_offline_hub_model_is_503_fast(client, monkeypatch, gpt3dev_settings):
    """A Hub model cannot be downloaded offline: a clear 503, not a hang."""
    from models_api.models import ModelEntry

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ModelEntry.objects.filter(model_id="GPT-2").update(enabled=True)
    status, body = post_json(client, "/v1/completions", {"model": "GPT-2", "prompt": "Hello"})
    assert status == 503, body
    assert_matches_schema(body, "ErrorResponse")
    assert body["error"]["param"] == "model"
    assert "openai-community/gpt2" in body["error"]["message"] or "download" in body["error"]["message"]


@pytest.mark.parametrize("prompt", [[1, -2, 3], [[1, 2], [-3]]])
def test_negative_token_ids_are_refused_like_embeddings_input(client, prompt):
    """One token-id rule (core.fields) for completions' prompt and embeddings' input."""
    status, body = post_json(client, "/v1/completions", {"model": "SmolLM2-135M-Instruct", "prompt": prompt})
    assert status == 400 and body["error"]["param"] == "prompt"
    status, body = post_json(client, "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": prompt})
    assert status == 400 and body["error"]["param"] == "input"


@pytest.mark.parametrize("path, body", [("/v1/completions", COMPLETION), ("/v1/chat/completions", CHAT),
                                        ("/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": "hi"})])
@pytest.mark.parametrize("field", ["use_beam_search", "prompt_logprobs", "truncate_prompt_tokens", "no_such_field"])
def test_unknown_fields_are_refused_by_name(client, path, body, field):
    """OpenAI answers an unrecognized argument with a 400; nothing is dropped silently."""
    status, error = post_json(client, path, body | {field: 1})
    assert status == 400, error
    assert error["error"]["param"] == field
    assert error["error"]["message"].startswith(f"Invalid value for '{field}': unrecognized request argument")


def test_unknown_stream_options_are_refused_by_name(client):
    body = CHAT | {"stream": True, "stream_options": {"usage": True}}
    status, error = post_json(client, "/v1/chat/completions", body)
    assert status == 400 and error["error"]["param"] == "stream_options.usage"


@pytest.mark.parametrize("field, value", [("stop_token_ids", [-1]), ("stop_token_ids", 5),
                                          ("include_stop_str_in_output", "maybe"), ("skip_special_tokens", [])])
def test_vllm_stop_fields_are_validated(client, field, value):
    for path, body in (("/v1/completions", COMPLETION), ("/v1/chat/completions", CHAT)):
        status, error = post_json(client, path, body | {field: value})
        assert status == 400 and error["error"]["param"].startswith(field), error
