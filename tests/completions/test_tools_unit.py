"""Tool-call shapes without a model: parsing a finished answer, streamed deltas however
the text is split, answers that repeat a call or are cut by max_tokens (plain and
streamed alike), and the generic prompt's rendering of a tool round trip."""

from __future__ import annotations

import json

import pytest
from rest_framework import serializers

from completions.tools import DeltaStream, message, parse_calls, render_messages, validate_tools

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
    assert parse_calls('<tool_call>\n{"name": "get_weather", "arguments": {"ci') == []  # cut: no complete call
    tricky = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "}\\n</tool_call>"}}\n</tool_call>'
    assert [json.loads(c["function"]["arguments"]) for c in parse_calls(tricky)] == [{"city": "}\n</tool_call>"}]


def streamed(text: str, step: int) -> tuple[DeltaStream, list[dict]]:
    stream, events = DeltaStream(), []
    for i in range(0, len(text), step):
        events += stream.feed(text[i:i + step], final=i + step >= len(text))
    return stream, events


def reassemble(events: list[dict]) -> list[tuple[str, object]]:
    calls: dict[int, dict] = {}
    for event in events:
        (tc,) = event["tool_calls"]
        calls.setdefault(tc["index"], {"name": tc["function"].get("name"), "arguments": ""})
        calls[tc["index"]]["arguments"] += tc["function"]["arguments"]
    assert not any("tool_call" in c["arguments"] for c in calls.values())  # never the markup
    return [(c["name"], json.loads(c["arguments"])) for c in calls.values()]


@pytest.mark.parametrize("step", [1, 2, 5, 13, 1000])
def test_streamed_deltas_reassemble(step):
    stream, events = streamed(TWO_CALLS, step)
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
        {"role": "assistant", "content": "",
         "tool_calls": [{"id": "c1", "name": "get_weather", "arguments": '{"city": "Paris"}'}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
    ]
    out = render_messages(history, plan, template_tools=False)
    assert out[0]["role"] == "system" and out[0]["content"].startswith("Be brief.\n\nYou can call these functions:")
    assert "You must call at least one function." in out[0]["content"]
    assert out[2] == {"role": "assistant",
                      "content": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'}
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


# What SmolLM2 writes for tool_choice "required" at temperature 0 with parallel calls
# allowed: the first call again, and again, until max_tokens cuts one.
WEATHER_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'
TIME_CALL = '<tool_call>\n{"name": "get_time", "arguments": {"timezone": "Europe/Paris"}}\n</tool_call>'
REPEATING = "\n".join([WEATHER_CALL, TIME_CALL, WEATHER_CALL, TIME_CALL]) + '\n<tool_call>\n{"name": "get'
FIRST_TWO = [("get_weather", {"city": "Paris", "unit": "celsius"}), ("get_time", {"timezone": "Europe/Paris"})]
PLAN = validate_tools({"tools": TOOLS, "tool_choice": "required"})


def plain(text: str, finish: str) -> tuple[list[tuple[str, object]], str, dict]:
    msg, reason = message(PLAN, text, finish)
    calls = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in msg.get("tool_calls") or []]
    return calls, reason, msg


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_an_exact_repeat_ends_the_turn_plain_and_streamed(step):
    calls, reason, msg = plain(REPEATING, "length")
    assert (calls, reason, msg["content"]) == (FIRST_TWO, "tool_calls", None)
    stream, events = DeltaStream(), []
    for i in range(0, len(REPEATING), step):
        events += stream.feed(REPEATING[i:i + step])
        if stream.ended:  # the server stops reading here, and the stream ends
            break
    assert stream.ended and (step > len(WEATHER_CALL) or i + step < len(REPEATING) - len(TIME_CALL))
    assert reassemble(events) == FIRST_TWO
    assert stream.finish_reason(None) == "tool_calls"
    # the same arguments written differently are still a repeat; other arguments are not
    spaced = WEATHER_CALL + "\n" + WEATHER_CALL.replace('"Paris", "unit"', '"Paris",  "unit"')
    assert plain(spaced, "stop")[:2] == (FIRST_TWO[:1], "tool_calls")
    other = WEATHER_CALL + "\n" + WEATHER_CALL.replace("Paris", "Lyon")
    assert len(plain(other, "stop")[0]) == 2


@pytest.mark.parametrize("cut", range(1, len(TIME_CALL) + 1))
def test_an_answer_cut_by_max_tokens_keeps_its_complete_calls(cut):
    text = WEATHER_CALL + "\n" + TIME_CALL[:cut]
    # the arguments and the object's "}" are written: the rest of the markup is forced
    whole = cut >= TIME_CALL.index("}}") + 2
    expected = FIRST_TWO if whole else FIRST_TWO[:1]
    calls, reason, msg = plain(text, "length")
    assert (calls, reason, msg["content"]) == (expected, "length", None)
    for step in (1, 4, 1000):
        stream, events = streamed(text, step)
        assert reassemble(events) == expected and stream.finish_reason("length") == "length"


def test_a_cut_answer_without_a_complete_call_has_no_content():
    calls, reason, msg = plain(WEATHER_CALL[:40], "length")
    assert (calls, reason, msg["content"]) == ([], "length", None) and "tool_calls" not in msg
    stream, events = streamed(WEATHER_CALL[:40], 1)
    assert events == [] and stream.finish_reason("length") == "length"
    assert plain(WEATHER_CALL, "stop")[:2] == (FIRST_TWO[:1], "tool_calls")
