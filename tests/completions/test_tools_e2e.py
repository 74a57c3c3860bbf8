"""Tool calling over real HTTP with the real SmolLM2 (whose template knows no tools,
so the generic format is used): every tool_choice mode, parallel_tool_calls, streamed
deltas, a round trip with a tool message, the older functions/function_call, and answers
that repeat a call or are cut by max_tokens (plain and streamed through the openai SDK)."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

from tests.api import post
from tests.openai_schema import assert_matches_schema

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "SmolLM2-135M-Instruct"
WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
# no additionalProperties: none are generated
TIME_PARAMS = {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 30}},
               "required": ["timezone"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city now",
                                      "parameters": WEATHER_PARAMS}},
    {"type": "function", "function": {"name": "get_time", "description": "The time in a timezone",
                                      "parameters": TIME_PARAMS}},
]
PARAMS = {"get_weather": WEATHER_PARAMS, "get_time": TIME_PARAMS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def chat(url: str, **body) -> dict:
    r = post(url, "/v1/chat/completions", {"model": MODEL, "messages": ASK, "tools": TOOLS} | body)
    assert r.status_code == 200, r.text
    return r.json()


def valid_calls(message: dict) -> list[dict]:
    assert message["content"] is None
    for call in message["tool_calls"]:
        assert call["id"].startswith("call_") and call["type"] == "function"
        jsonschema.validate(json.loads(call["function"]["arguments"]), PARAMS[call["function"]["name"]])
    return message["tool_calls"]


def test_required_and_named_choices_call_from_the_first_token(live_server_url):
    body = chat(live_server_url, tool_choice="required", temperature=1.0, n=3, seed=3, max_tokens=80)
    assert_matches_schema(body, "CreateChatCompletionResponse")
    calls = 0
    for choice in body["choices"]:
        if choice["finish_reason"] == "tool_calls":
            calls += len(valid_calls(choice["message"]))
        else:
            assert choice["finish_reason"] == "length"
    assert calls >= 2
    named = {"type": "function", "function": {"name": "get_time"}}
    body = chat(live_server_url, tool_choice=named, temperature=0, max_tokens=60)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert [c["function"]["name"] for c in valid_calls(choice["message"])] == ["get_time"]


def test_auto_none_and_parallel_false(live_server_url):
    for choice in chat(live_server_url, tool_choice="auto", temperature=1.0, n=3, seed=8, max_tokens=60)["choices"]:
        if choice["finish_reason"] == "tool_calls":
            valid_calls(choice["message"])
        else:
            assert isinstance(choice["message"]["content"], str) and "tool_calls" not in choice["message"]
    body = chat(live_server_url, tool_choice="none", temperature=0, max_tokens=20)
    message = body["choices"][0]["message"]
    assert isinstance(message["content"], str) and "<tool_call>" not in message["content"]
    assert "tool_calls" not in message and body["choices"][0]["finish_reason"] in ("stop", "length")
    body = chat(live_server_url, tool_choice="required", parallel_tool_calls=False, temperature=1.0, n=4, seed=1,
                max_tokens=80)
    for choice in body["choices"]:
        if choice["finish_reason"] == "tool_calls":
            assert len(valid_calls(choice["message"])) == 1


def streamed_calls(client, **kwargs) -> tuple[list[tuple[str, dict]], list[str]]:
    """A stream's calls, reassembled from its deltas, and its finish reasons."""
    calls: dict[int, dict] = {}
    finishes = []
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        choice = chunk.choices[0]
        for tc in choice.delta.tool_calls or []:
            if tc.index not in calls:  # the first delta of a call names it
                assert tc.id.startswith("call_") and tc.type == "function" and tc.function.name
                calls[tc.index] = {"name": tc.function.name, "arguments": tc.function.arguments or ""}
            else:
                assert tc.id is None and tc.function.name is None
                calls[tc.index]["arguments"] += tc.function.arguments
        assert not choice.delta.content  # never the format's markup
        if choice.finish_reason:
            finishes.append(choice.finish_reason)
    for call in calls.values():
        jsonschema.validate(json.loads(call["arguments"]), PARAMS[call["name"]])
    return [(c["name"], json.loads(c["arguments"])) for c in calls.values()], finishes


def plain_calls(message) -> list[tuple[str, dict]]:
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in valid_calls(message.model_dump())]


def test_streamed_deltas_reassemble_into_the_plain_calls(openai_client):
    kwargs = dict(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
                  temperature=0, max_tokens=80)
    plain = openai_client.chat.completions.create(**kwargs).choices[0]
    assert plain.finish_reason == "tool_calls"
    assert streamed_calls(openai_client, **kwargs) == (plain_calls(plain.message), ["tool_calls"])


def test_a_repeated_call_ends_the_turn(openai_client):
    # With parallel calls allowed SmolLM2 writes its calls again and again until
    # max_tokens: the first exact repeat ends the turn and is dropped.
    kwargs = dict(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=120)
    plain = openai_client.chat.completions.create(**kwargs)
    choice = plain.choices[0]
    assert choice.finish_reason == "tool_calls" and plain.usage.completion_tokens < 120
    calls = plain_calls(choice.message)
    assert calls and len({json.dumps(c, sort_keys=True) for c in calls}) == len(calls)
    assert streamed_calls(openai_client, **kwargs) == (calls, ["tool_calls"])


def test_an_answer_cut_by_max_tokens_keeps_its_complete_calls(openai_client):
    # 40 tokens hold SmolLM2's first call and cut its second one
    kwargs = dict(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=40)
    choice = openai_client.chat.completions.create(**kwargs).choices[0]
    assert choice.finish_reason == "length"
    calls = plain_calls(choice.message)
    assert len(calls) == 1
    assert streamed_calls(openai_client, **kwargs) == (calls, ["length"])
    choice = openai_client.chat.completions.create(**kwargs | {"max_tokens": 20}).choices[0]
    assert (choice.finish_reason, choice.message.content, choice.message.tool_calls) == ("length", None, None)


def test_round_trip_with_a_tool_message(openai_client):
    first = openai_client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0, max_tokens=60,
    ).choices[0].message
    call = first.tool_calls[0]
    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "sunny"})},
    ]
    answer = openai_client.chat.completions.create(
        model=MODEL, messages=history, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=40
    )
    assert answer.choices[0].message.content and answer.choices[0].message.tool_calls is None
    plain = openai_client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=1)
    assert answer.usage.prompt_tokens > plain.usage.prompt_tokens + 20  # the call and its result were in the prompt


def test_legacy_functions_map_onto_tools(live_server_url):
    r = httpx.post(f"{live_server_url}/v1/chat/completions", timeout=300, json={
        "model": MODEL, "messages": ASK, "functions": [t["function"] for t in TOOLS],
        "function_call": {"name": "get_weather"}, "temperature": 0, "max_tokens": 60,
    })
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"]["function_call"]["name"] == "get_weather"
    jsonschema.validate(json.loads(choice["message"]["function_call"]["arguments"]), WEATHER_PARAMS)
