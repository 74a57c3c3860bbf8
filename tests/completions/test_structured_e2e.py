"""Constrained output over real HTTP with the real SmolLM2: response_format on chat,
vLLM's structured_outputs / guided_* on both endpoints, and the 400s for what cannot
be compiled or enforced."""

from __future__ import annotations

import json
import re

import httpx
import jsonschema
import pytest
from pydantic import BaseModel, Field

from tests.api import post
from tests.openai_schema import assert_matches_schema
from tests.structured_schemas import SCHEMAS

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "SmolLM2-135M-Instruct"
ASK = [{"role": "user", "content": "Describe a person as JSON."}]


def chat(url: str, **body) -> httpx.Response:
    return post(url, "/v1/chat/completions", {"model": MODEL, "messages": ASK} | body)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_schema_answers_validate_at_temperature_one(live_server_url, name):
    schema = SCHEMAS[name]
    fmt = {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
    stopped = 0
    for seed in (11, 12):
        r = chat(live_server_url, response_format=fmt, temperature=1.0, n=3, seed=seed, max_tokens=100)
        assert r.status_code == 200, r.text
        body = r.json()
        assert_matches_schema(body, "CreateChatCompletionResponse")
        for choice in body["choices"]:
            if choice["finish_reason"] == "stop":
                jsonschema.validate(json.loads(choice["message"]["content"]), schema)
                stopped += 1
            else:
                assert choice["finish_reason"] == "length"
    assert stopped >= 3


def test_json_object_and_text(live_server_url):
    r = chat(live_server_url, response_format={"type": "json_object"}, temperature=0, max_tokens=60)
    choice = r.json()["choices"][0]
    if choice["finish_reason"] == "stop":
        assert isinstance(json.loads(choice["message"]["content"]), dict)
    assert choice["message"]["content"].startswith("{")
    r = chat(live_server_url, response_format={"type": "text"}, temperature=0, max_tokens=8)
    assert r.status_code == 200 and not r.json()["choices"][0]["message"]["content"].startswith("{")


class City(BaseModel):
    name: str = Field(max_length=30)
    country: str = Field(max_length=30)
    population_millions: int = Field(ge=0, le=40)


def test_sdk_parse_returns_parsed(openai_client):
    completion = openai_client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Tell me about Paris."}],
        response_format=City, temperature=0, max_tokens=80,
    )
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(message.parsed, City) and message.parsed.name


def test_stream_equals_plain_and_logprobs_follow_the_mask(live_server_url, openai_client):
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMAS["scores"]}}
    kwargs = dict(model=MODEL, messages=ASK, response_format=fmt, temperature=0, max_tokens=60, logprobs=True,
                  top_logprobs=3)
    plain = openai_client.chat.completions.create(**kwargs)
    chunks = list(openai_client.chat.completions.create(**kwargs, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert plain.choices[0].message.content.startswith('{"verdict": "')
    # after the mask: the token after '{"verdict": "' has only enum starts as alternatives
    entries = plain.choices[0].logprobs.content
    joined = ""
    for entry in entries:
        if joined.endswith('{"verdict": "'):
            assert all(any(v.startswith(alt.token) for v in ("yes", "no", "unsure")) for alt in entry.top_logprobs)
            break
        joined += entry.token


def test_structured_outputs_on_completions_and_chat(live_server_url):
    url = f"{live_server_url}/v1/completions"
    base = {"model": MODEL, "prompt": "Q: Is the sky blue?\nA:", "max_tokens": 10, "temperature": 1.0, "n": 3,
            "seed": 5}
    cases = [
        ({"structured_outputs": {"choice": ["yes", "no"]}}, r"yes|no"),
        ({"guided_choice": [" maybe", " sure"]}, r" maybe| sure"),
        ({"structured_outputs": {"regex": r" [A-Z][a-z]{2,6}\."}}, r" [A-Z][a-z]{2,6}\."),
        ({"guided_regex": r" \d{2}"}, r" \d{2}"),
        ({"guided_grammar": 'root ::= " " ("yes" | "no") "!"'}, r" (yes|no)!"),
        ({"structured_outputs": {"grammar": 'start: " " WORD\nWORD: /[a-z]{3}/'}}, r" [a-z]{3}"),
    ]
    for extra, pattern in cases:
        r = httpx.post(url, json=base | extra, timeout=300)
        assert r.status_code == 200, (extra, r.text)
        for choice in r.json()["choices"]:
            assert choice["finish_reason"] == "stop" and re.fullmatch(pattern, choice["text"]), (extra, choice)
    r = httpx.post(url, json=base | {"guided_json": SCHEMAS["scores"], "max_tokens": 80}, timeout=300)
    for choice in r.json()["choices"]:
        if choice["finish_reason"] == "stop":
            jsonschema.validate(json.loads(choice["text"]), SCHEMAS["scores"])
    r = chat(live_server_url, structured_outputs={"choice": ["Paris", "Rome"]}, temperature=0, max_tokens=5)
    assert r.json()["choices"][0]["message"]["content"] in ("Paris", "Rome")


@pytest.mark.parametrize(
    "body, param, words",
    [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "object", "properties": {"a": {"not": {"type": "string"}}}}}}},
         "response_format.json_schema.schema", "not"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strin"}}}},
         "response_format.json_schema.schema", "strin"),
        ({"structured_outputs": {"regex": "[0-9]+("}}, "structured_outputs.regex", "regex"),
        ({"guided_grammar": "start: undefined_rule"}, "guided_grammar", "undefined_rule"),
        ({"guided_json": {"type": "object", "properties": {"d": {"type": "string", "format": "no-such-format"}}}},
         "guided_json", "no-such-format"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"a": {"type": "integer", "not": {"const": 3}}}}}}]},
         "tools[0].function.parameters", "not"),
    ],
)
def test_uncompilable_constraints_are_400_naming_the_field(live_server_url, body, param, words):
    r = chat(live_server_url, **body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and words in error["message"], error
    r = chat(live_server_url, max_tokens=3, temperature=0)  # the server still answers
    assert r.status_code == 200
