"""/v1/responses over real HTTP with the real SmolLM2, through the official openai SDK
(and raw HTTP where the SDK hides the wire): answers, streams and their events checked
against OpenAI's schemas, structured output, stored state, background, tools, keys."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from tests.responses.conftest import ALICE, BOB, MODEL, client_for
from tests.responses.schema import assert_event, assert_matches

pytestmark = [pytest.mark.e2e, pytest.mark.model]

QUESTION = "What is the capital of France?"
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False},
    "strict": True,
}


def post(server, path: str, body: dict, key: str = ALICE) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1{path}", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=300)


def stream_events(server, body: dict) -> list[dict]:
    headers = {"Authorization": f"Bearer {ALICE}"}
    with httpx.stream("POST", f"{server.base_url}/v1/responses", json=body | {"stream": True}, headers=headers,
                      timeout=300) as response:
        raw = response.read().decode()
    assert response.status_code == 200, raw
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for frame in raw.split("\n\n"):
        if not frame.strip():
            continue
        lines = dict(line.split(": ", 1) for line in frame.split("\n"))
        event = json.loads(lines["data"])
        assert lines["event"] == event["type"]
        events.append(event)
    return events


def test_create_answers_with_a_response_object(alice, responses_server):
    response = alice.responses.create(model=MODEL, input=QUESTION, max_output_tokens=8, temperature=0)
    assert response.object == "response" and response.id.startswith("resp_")
    assert "Paris" in response.output_text
    assert response.status in ("completed", "incomplete")
    usage = response.usage
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens and 0 < usage.output_tokens <= 8
    raw = post(responses_server, "/responses", {"model": MODEL, "input": QUESTION, "max_output_tokens": 8,
                                                "temperature": 0, "metadata": {"team": "docs"}}).json()
    assert_matches(raw, "Response")
    assert raw["output"][0]["content"][0]["text"] == response.output_text  # greedy: the same answer
    assert raw["metadata"] == {"team": "docs"} and raw["temperature"] == 0


def test_max_output_tokens_makes_an_incomplete_response(alice):
    response = alice.responses.create(model=MODEL, input=QUESTION, max_output_tokens=1, temperature=0)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 1


def test_stream_events_follow_openai_order_and_schemas(alice, responses_server):
    body = {"model": MODEL, "input": QUESTION, "max_output_tokens": 8, "temperature": 0}
    events = stream_events(responses_server, body)
    for event in events:
        assert_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    types = [e["type"] for e in events]
    assert types[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          events[-1]["type"]]
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == text
    plain = alice.responses.create(**body)
    assert plain.output_text == text

    with alice.responses.stream(**body) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final_response = stream.get_final_response()
    assert "".join(deltas) == final_response.output_text == text


def test_parse_with_a_pydantic_model(alice):
    class City(BaseModel):
        name: str = Field(max_length=12)

    parsed = alice.responses.parse(model=MODEL, input="Name the capital of France as JSON.", text_format=City,
                                    max_output_tokens=24, temperature=0)
    assert isinstance(parsed.output_parsed, City)
    assert parsed.output_parsed.name


def test_retrieve_input_items_and_delete(alice, responses_server):
    items = [{"role": "developer", "content": "Answer in one word."},
             {"role": "user", "content": [{"type": "input_text", "text": QUESTION}]}]
    created = alice.responses.create(model=MODEL, input=items, max_output_tokens=4, temperature=0)
    again = alice.responses.retrieve(created.id)
    assert again.output_text == created.output_text and again.status == created.status

    listed = alice.responses.input_items.list(created.id, order="asc")
    assert [i.role for i in listed.data] == ["developer", "user"]
    assert listed.data[1].content[0].text == QUESTION
    raw = httpx.get(f"{responses_server.base_url}/v1/responses/{created.id}/input_items?limit=1",
                    headers={"Authorization": f"Bearer {ALICE}"}, timeout=30).json()
    assert_matches(raw, "ResponseItemList")
    assert raw["has_more"] is True and raw["data"][0]["role"] == "user"  # newest first by default

    alice.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        alice.responses.retrieve(created.id)


def test_store_false_is_not_kept(alice):
    created = alice.responses.create(model=MODEL, input="Hi", max_output_tokens=2, store=False)
    with pytest.raises(openai.NotFoundError):
        alice.responses.retrieve(created.id)


def test_background_runs_and_cancels(alice):
    queued = alice.responses.create(model=MODEL, input="Hi", max_output_tokens=3, background=True)
    assert queued.status == "queued" and queued.background is True
    deadline = time.monotonic() + 240
    done = alice.responses.retrieve(queued.id)
    while done.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.5)
        done = alice.responses.retrieve(queued.id)
    assert done.status in ("completed", "incomplete") and done.output_text

    long = alice.responses.create(model=MODEL, input="Write a long story.", max_output_tokens=400, background=True)
    cancelled = alice.responses.cancel(long.id)
    assert cancelled.status == "cancelled"
    time.sleep(1)
    assert alice.responses.retrieve(long.id).status == "cancelled"


def test_tool_round_trip_with_previous_response_id(alice, responses_server):
    first = alice.responses.create(model=MODEL, input="What is the weather in Paris?", tools=[WEATHER_TOOL],
                                    tool_choice="required", parallel_tool_calls=False, max_output_tokens=40,
                                    temperature=0)
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    assert calls[0].call_id.startswith("call_")

    second = alice.responses.create(
        model=MODEL, previous_response_id=first.id, tools=[WEATHER_TOOL], max_output_tokens=12, temperature=0,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "22 degrees and sunny"}])
    assert second.previous_response_id == first.id
    assert second.output[0].type == "message" and second.output_text
    # The second prompt holds the first turn: the replay is longer than the new input alone.
    alone = alice.responses.create(
        model=MODEL, tools=[WEATHER_TOOL], max_output_tokens=1,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "22 degrees and sunny"}])
    assert second.usage.input_tokens > alone.usage.input_tokens

    events = stream_events(responses_server, {"model": MODEL, "input": "What is the weather in Rome?",
                                              "tools": [WEATHER_TOOL], "tool_choice": "required",
                                              "parallel_tool_calls": False, "max_output_tokens": 40,
                                              "temperature": 0})
    for event in events:
        assert_event(event)
    types = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" in types and "response.function_call_arguments.done" in types
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert json.loads(done["arguments"])["city"]


def test_hosted_tools_are_accepted_and_not_offered(alice):
    response = alice.responses.create(model=MODEL, input="Hi", max_output_tokens=3,
                                       tools=[{"type": "web_search"}, {"type": "code_interpreter",
                                                                       "container": {"type": "auto"}}])
    assert [t.type for t in response.tools] == ["web_search", "code_interpreter"]
    assert all(item.type == "message" for item in response.output)


def test_logprobs_on_request(responses_server):
    raw = post(responses_server, "/responses", {"model": MODEL, "input": "Hi", "max_output_tokens": 3,
                                                "include": ["message.output_text.logprobs"], "top_logprobs": 2}).json()
    assert_matches(raw, "Response")
    logprobs = raw["output"][0]["content"][0]["logprobs"]
    assert logprobs and all(len(lp["top_logprobs"]) == 2 for lp in logprobs)


@pytest.mark.parametrize(("body", "param"), [
    ({"bogus": 1}, "bogus"),
    ({"stop": ["\n"]}, "stop"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"input": [{"type": "input_image", "image_url": "x"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content[0]"),
    ({"tools": [{"type": "function", "name": "bad name!", "parameters": {}}]}, "tools[0].name"),
    ({"tool_choice": {"type": "function", "name": "missing"}, "tools": [WEATHER_TOOL]}, "tool_choice"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
    ({"previous_response_id": "resp_does_not_exist"}, "previous_response_id"),
    ({"conversation": "conv_1"}, "conversation"),
])
def test_bad_requests_name_the_field(responses_server, body, param):
    answer = post(responses_server, "/responses", {"model": MODEL, "input": "Hi", "max_output_tokens": 2} | body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"


def test_a_second_key_cannot_read_or_continue_another_keys_response(alice, responses_server):
    created = alice.responses.create(model=MODEL, input="Hi", max_output_tokens=2)
    bob = client_for(responses_server, BOB)
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.delete(created.id)
    with pytest.raises(openai.BadRequestError) as refused:
        bob.responses.create(model=MODEL, input="Hi", previous_response_id=created.id, max_output_tokens=2)
    assert refused.value.body["param"] == "previous_response_id"
    assert alice.responses.retrieve(created.id).id == created.id


def test_input_tokens_counts_with_the_template_and_tools(responses_server):
    plain = post(responses_server, "/responses/input_tokens", {"model": MODEL, "input": QUESTION}).json()
    assert_matches(plain, "TokenCountsResource")
    with_tools = post(responses_server, "/responses/input_tokens",
                      {"model": MODEL, "input": QUESTION, "tools": [WEATHER_TOOL]}).json()
    created = post(responses_server, "/responses", {"model": MODEL, "input": QUESTION, "max_output_tokens": 1}).json()
    assert plain["input_tokens"] == created["usage"]["input_tokens"]
    assert with_tools["input_tokens"] > plain["input_tokens"]


def test_stored_responses_survive_a_restart_and_unfinished_ones_fail(responses_server):
    alice = client_for(responses_server)
    kept = alice.responses.create(model=MODEL, input="Hi", max_output_tokens=2)
    running = alice.responses.create(model=MODEL, input="Write a long story.", max_output_tokens=500,
                                     background=True)
    responses_server.restart(kill=True)  # the process dies mid-generation
    alice = client_for(responses_server)
    assert alice.responses.retrieve(kept.id).output_text == kept.output_text
    interrupted = alice.responses.retrieve(running.id)
    assert interrupted.status == "failed"
    assert "stopped before this background response finished" in interrupted.error.message
