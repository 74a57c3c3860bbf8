"""Cheap caps before expensive work: MAX_PROMPTS, MAX_MESSAGES and MAX_INPUT_CHARS are
checked right after the JSON is parsed (before validation, the model and tokenising),
and each refusal is a 400 naming the field and the setting."""

from __future__ import annotations

import pytest

from tests.api import error_of, post

pytestmark = pytest.mark.django_db

MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture
def caps(gpt3dev_settings):
    gpt3dev_settings.update(MAX_PROMPTS=3, MAX_MESSAGES=4, MAX_INPUT_CHARS=100)
    return gpt3dev_settings


def test_too_many_prompts(client, caps):
    error = error_of(post(client, "/v1/completions", {"model": MODEL, "prompt": ["a", "b", "c", "d"]}), 400)
    assert error["param"] == "prompt"
    assert error["message"] == (
        "Invalid value for 'prompt': this server accepts at most 3 prompts per request (MAX_PROMPTS), got 4."
    )
    error = error_of(post(client, "/v1/completions", {"model": MODEL, "prompt": [[1], [2], [3], [4]]}), 400)
    assert "MAX_PROMPTS" in error["message"]


def test_one_token_id_prompt_is_one_prompt(client, caps):
    error = error_of(post(client, "/v1/completions", {"model": "no-such-model", "prompt": [1, 2, 3, 4, 5, 6]}), 404)
    assert error["code"] == "model_not_found"  # past the caps


def test_too_many_messages(client, caps):
    messages = [{"role": "user", "content": "hi"}] * 5
    error = error_of(post(client, "/v1/chat/completions", {"model": MODEL, "messages": messages}), 400)
    assert error["param"] == "messages" and "(MAX_MESSAGES), got 5" in error["message"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"prompt": "x" * 101}, "prompt"),
        ("/v1/completions", {"prompt": ["x" * 60, "y" * 60]}, "prompt"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 101}]}, "messages"),
        ("/v1/chat/completions",
         {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 60}] * 2}]}, "messages"),
        ("/v1/embeddings", {"input": ["x" * 60, "y" * 60]}, "input"),
    ],
)
def test_too_many_characters(client, caps, path, body, param):
    error = error_of(post(client, path, {"model": MODEL} | body), 400)
    assert error["param"] == param
    assert "120 characters" in error["message"] or "101 characters" in error["message"]
    assert "(MAX_INPUT_CHARS)" in error["message"]


def test_under_the_caps_goes_on_to_validation(client, caps):
    error = error_of(post(client, "/v1/completions", {"model": MODEL, "prompt": ["a", "b"], "temperature": 9}), 400)
    assert error["param"] == "temperature"
