"""Tool-call shapes without a model: parsing a finished answer, streamed deltas however
the text is split, and the generic prompt's rendering of a tool round trip."""

from __future__ import annotations

import json

import pytest
from rest_framework import serializers

from completions.tools import DeltaStream, parse_calls, render_messages, validate_tools

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "noargs"}}]
TWO_CALLS = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris}\\n"}}\n</tool_call>\n'
             '<tool_call>\n{"name": "noargs", "arguments": {}}\n</tool_call>')


def test_parse_calls():
    calls = parse_calls(TWO_CALLS)
    assert [c["function"]["name"] for c in calls] == ["get_weather", "noargs"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris}\n"}
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    assert parse_calls("It is sunny.") is None
    assert parse_calls('<tool_call>\n{"name": "get_weather", "arguments": {"ci') is None


@pytest.mark.parametrize("step", [1, 2, 5, 13, 1000])
def test_streamed_deltas_reassemble(step):
    stream, events = DeltaStream(), []
    for i in range(0, len(TWO_CALLS), step):
        events += stream.feed(TWO_CALLS[i:i + step], final=i + step >= len(TWO_CALLS))
    calls: dict[int, dict] = {}
    for event in events:
        assert set(event) == {"tool_calls"}
        (tc,) = event["tool_calls"]
        if tc["index"] not in calls:
            assert tc["id"].startswith("call_") and tc["type"] == "function" and tc["function"]["arguments"] == ""
            calls[tc["index"]] = {"name": tc["function"]["name"], "arguments": ""}
        else:
            assert set(tc) == {"index", "function"} and set(tc["function"]) == {"arguments"}
            calls[tc["index"]]["arguments"] += tc["function"]["arguments"]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("get_weather", {"city": "Paris}\n"}), ("noargs", {})]
    assert stream.finish_reason("stop") == "tool_calls" and stream.finish_reason("length") == "length"


def test_text_that_only_looks_like_a_call_at_first_is_content():
    stream = DeltaStream()
    events = [e for ch in "<tool is here" for e in stream.feed(ch)] + stream.feed("", final=True)
    assert "".join(e["content"] for e in events) == "<tool is here"
    assert stream.finish_reason("stop") == "stop"
    assert DeltaStream().feed("Hi") == [{"content": "Hi"}]


def test_generic_prompt_renders_a_round_trip():
    plan = validate_tools({"tools": TOOLS, "tool_choice": "required"})
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "name": "get_weather", "arguments": '{"city": "Paris"}'}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
    ]
    out = render_messages(history, plan, template_tools=False)
    assert out[0]["role"] == "system" and out[0]["content"].startswith("Be brief.\n\nYou can call these functions:")
    assert "You must call at least one function." in out[0]["content"]
    assert out[2] == {"role": "assistant", "content": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'}
    assert out[3] == {"role": "user", "content": "<tool_response>\nsunny\n</tool_response>"}
    native = render_messages(history, plan, template_tools=True)
    assert native[2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert native[3] == {"role": "tool", "content": "sunny", "tool_call_id": "c1"}


def test_tool_choice_modes():
    assert validate_tools({"tools": TOOLS, "tool_choice": "none"}) is None
    assert validate_tools({"tools": TOOLS}).choice == "auto"
    assert validate_tools({"tools": TOOLS, "parallel_tool_calls": False}).parallel is False
    legacy = validate_tools({"functions": [TOOLS[0]["function"]], "function_call": {"name": "get_weather"}})
    assert legacy.legacy and legacy.choice == "get_weather" and not legacy.parallel
    with pytest.raises(serializers.ValidationError):
        validate_tools({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}})
