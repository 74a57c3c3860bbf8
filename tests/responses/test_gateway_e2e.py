"""An upstream row forwards /v1/responses natively: a gateway (loading no model) in
front of the Responses test server answers as the server itself does, plain and
streamed, and stores nothing of its own."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai import OpenAI

from tests.live_server import LiveServer
from tests.responses.conftest import ALICE, MODEL, client_for

pytestmark = [pytest.mark.e2e, pytest.mark.model]


@pytest.fixture(scope="module")
def gateway(responses_server, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("responses-gateway")
    registry = workdir / "registry.json"
    registry.write_text(json.dumps({"models": [
        {"name": MODEL, "upstream": f"{responses_server.base_url}/v1", "is_chat": True, "timeout": 600,
         "api_key_env": "UPSTREAM_TEST_KEY"},
    ]}))
    server = LiveServer(workdir, MODEL_REGISTRY_PATH=str(registry), UPSTREAM_TEST_KEY=ALICE,
                        DATABASE_URL=f"sqlite:///{workdir / 'own.sqlite3'}").start()
    yield server
    server.stop()


def test_the_gateway_forwards_responses(gateway, responses_server):
    client = OpenAI(base_url=f"{gateway.base_url}/v1", api_key="not-needed", max_retries=0, timeout=600)
    body = {"model": MODEL, "input": "What is the capital of France?", "max_output_tokens": 6, "temperature": 0}
    direct = client_for(responses_server).responses.create(**body)
    forwarded = client.responses.create(**body)
    assert forwarded.output_text == direct.output_text and forwarded.model == MODEL
    assert forwarded.usage.output_tokens == direct.usage.output_tokens

    # Raw events (the SDK's stream helper wants response.completed; a short answer may be incomplete).
    with httpx.stream("POST", f"{gateway.base_url}/v1/responses", json=body | {"stream": True},
                      timeout=600) as response:
        frames = [frame for frame in response.read().decode().split("\n\n") if frame.strip()]
    events = [json.loads(frame.split("data: ", 1)[1]) for frame in frames]
    assert all(frame.startswith(f"event: {event['type']}\n") for frame, event in zip(frames, events))
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == direct.output_text
    assert events[-1]["type"] == f"response.{direct.status}" and events[-1]["response"]["model"] == MODEL

    # The stored response lives upstream: the gateway has none of its own.
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(forwarded.id)
    counted = httpx.post(f"{gateway.base_url}/v1/responses/input_tokens", json={"model": MODEL, "input": "Hi"},
                         timeout=120)
    direct_count = httpx.post(f"{responses_server.base_url}/v1/responses/input_tokens",
                              json={"model": MODEL, "input": "Hi"}, headers={"Authorization": f"Bearer {ALICE}"},
                              timeout=120)
    assert counted.status_code == 200 and counted.json() == direct_count.json()
