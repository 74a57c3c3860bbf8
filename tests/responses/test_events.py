"""The event writer on its own: engine deltas in, Responses items and events out, each
event valid against its own schema in OpenAI's spec (the e2e tests check the same on
the wire with the real model)."""

from __future__ import annotations

import json

from inference.types import SequenceDelta, TokenLogprob, TopLogprob
from responses.events import OutputWriter
from responses.translate import tool_plan
from tests.responses.schema import assert_event

PLAN = tool_plan({"tools": [{"type": "function", "name": "get_weather",
                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]})


def _numbered(events: list[dict]) -> list[dict]:
    return [event | {"sequence_number": i} for i, event in enumerate(events)]


def test_text_becomes_one_message_with_its_events_and_logprobs():
    writer = OutputWriter(None, logprobs=True)
    top = (TopLogprob(token="Hi", token_id=1, logprob=-0.1, bytes=(72, 105)),)
    for text, last in (("Hel", False), ("lo", True)):
        lp = TokenLogprob(token=text, token_id=1, logprob=-0.5, bytes=tuple(text.encode()), top=top)
        writer.feed(SequenceDelta(index=0, text=text, token_ids=(1,), logprobs=(lp,),
                                  finish_reason="stop" if last else None))
    writer.finish("completed")
    events = _numbered(writer.take())
    for event in events:
        assert_event(event)
    assert [e["type"] for e in events] == [
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done"]
    (message,) = writer.output
    assert message["status"] == "completed" and message["content"][0]["text"] == "Hello"
    assert [lp["token"] for lp in message["content"][0]["logprobs"]] == ["Hel", "lo"]


def test_a_call_is_sent_whole_and_a_repeat_ends_the_turn():
    writer = OutputWriter(PLAN, logprobs=False)
    block = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    for piece in (block[:15], block[15:40], block[40:], "\n" + block):
        writer.feed(SequenceDelta(index=0, text=piece, token_ids=(1,)))
    assert writer.ended  # the exact repeat
    writer.finish("completed")
    events = _numbered(writer.take())
    for event in events:
        assert_event(event)
    assert [e["type"] for e in events] == [
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done"]
    (call,) = writer.output
    assert call["type"] == "function_call" and call["name"] == "get_weather" and call["status"] == "completed"
    assert json.loads(call["arguments"]) == {"city": "Paris"} and call["call_id"].startswith("call_")


def test_an_empty_answer_is_an_empty_message():
    writer = OutputWriter(None, logprobs=False)
    writer.feed(SequenceDelta(index=0, text="", token_ids=(2,), finish_reason="stop"))
    writer.finish("completed")
    for event in _numbered(writer.take()):
        assert_event(event)
    assert writer.output[0]["content"][0]["text"] == ""


def test_max_tool_calls_caps_the_calls():
    writer = OutputWriter(PLAN, logprobs=False, max_tool_calls=1)
    one = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    two = '\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
    writer.feed(SequenceDelta(index=0, text=one + two, token_ids=(1,), finish_reason="stop"))
    assert len(writer.output) == 1 and writer.ended
