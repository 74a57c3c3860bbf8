"""A gateway whose default rows are turned into upstream rows, in front of a second
gpt3dev process serving the bundled models: the same answers as direct, the suite's own
end-to-end checks passing through it, disconnects reaching the upstream, and our keys
and limits applying to upstream models."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import time

import httpx
import pytest
from openai import OpenAI

from tests.access.test_e2e_model import start_of_a_window
from tests.completions import test_contract, test_e2e, test_structured_e2e, test_tools_e2e
from tests.embeddings import test_e2e as embeddings_e2e
from tests.live_server import ROOT, LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "SmolLM2-135M-Instruct"
EMBEDDER = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def gateway(live_server_url, tmp_path_factory):
    """The registry file turns both default rows into upstream rows of the live server."""
    workdir = tmp_path_factory.mktemp("gateway")
    registry = workdir / "registry.json"
    upstream = f"{live_server_url}/v1"
    registry.write_text(json.dumps({"models": [
        {"name": MODEL, "upstream": upstream, "is_chat": True, "timeout": 120},
        {"name": EMBEDDER, "upstream": upstream, "task": "embeddings"},
    ]}))
    server = LiveServer(workdir, MODEL_REGISTRY_PATH=str(registry), MAX_N="8",
                        DATABASE_URL=f"sqlite:///{workdir / 'own.sqlite3'}").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway_client(gateway):
    return OpenAI(base_url=f"{gateway.base_url}/v1", api_key="not-needed", max_retries=0, timeout=120)


def test_the_gateway_loads_no_model(gateway, gateway_client):
    gateway_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    ready = httpx.get(f"{gateway.base_url}/readyz").json()
    assert ready["ready"] is True
    assert all(not m["loaded"] and m["detail"].startswith("upstream: 1 of 1") for m in ready["models"])


def test_same_answers_as_direct(gateway_client, openai_client):
    question = [{"role": "user", "content": "What is the capital of France?"}]
    answers = [c.chat.completions.create(model=MODEL, messages=question, max_tokens=16, temperature=0)
               for c in (openai_client, gateway_client)]
    assert answers[0].choices[0].message.content == answers[1].choices[0].message.content
    assert answers[0].usage.completion_tokens == answers[1].usage.completion_tokens
    assert answers[1].model == MODEL
    vectors = [c.embeddings.create(model=EMBEDDER, input=["a gateway"], encoding_format="float").data[0].embedding
               for c in (openai_client, gateway_client)]
    assert vectors[0] == vectors[1]
    streams = [c.completions.create(model=MODEL, prompt="The sky is", max_tokens=8, temperature=0, stream=True)
               for c in (openai_client, gateway_client)]
    texts = ["".join(chunk.choices[0].text for chunk in s if chunk.choices) for s in streams]
    assert texts[0] == texts[1] and texts[0]


# The suite's own end-to-end checks, pointed at the gateway (those taking no parameters of their own).
REUSED = [
    (module, name)
    for module in (test_e2e, test_contract, test_tools_e2e, test_structured_e2e, embeddings_e2e)
    for name, fn in vars(module).items()
    if name.startswith("test_") and callable(fn) and not hasattr(fn, "pytestmark")
    and set(inspect.signature(fn).parameters) <= {"openai_client", "live_server_url"}
    and name not in {"test_disconnect_cancels_generation"}  # reads the server's own engine: below
]


@pytest.mark.parametrize("module, name", REUSED, ids=[f"{m.__name__.rsplit('.', 1)[-1]}.{n}" for m, n in REUSED])
def test_suite_checks_pass_through_the_gateway(gateway, gateway_client, module, name):
    fn = getattr(module, name)
    given = {"openai_client": gateway_client, "live_server_url": gateway.base_url}
    fn(**{param: given[param] for param in inspect.signature(fn).parameters})


def running(url: str) -> int:
    models = httpx.get(f"{url}/readyz", timeout=10).json()["models"]
    return next(m.get("running", 0) for m in models if m["id"] == MODEL)


def test_a_client_leaving_aborts_the_upstream_generation(gateway, live_server_url):
    body = {"model": MODEL, "prompt": "Count:", "max_tokens": 1500, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{gateway.base_url}/v1/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
        assert running(live_server_url) == 1
    deadline = time.monotonic() + 15
    while running(live_server_url) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running(live_server_url) == 0


def create_key(gateway: LiveServer, name: str, *args: str) -> str:
    made = subprocess.run([sys.executable, "manage.py", "create_api_key", name, *args], cwd=ROOT, env=gateway.env,
                          check=True, capture_output=True, text=True, timeout=120)
    return made.stdout.strip()


def test_keys_model_lists_and_token_limits_apply_to_upstream_models(gateway):
    only_embeddings = create_key(gateway, "embed-only", "--models", EMBEDDER)
    small = create_key(gateway, "small", "--tpm", "60")
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    with httpx.Client(base_url=gateway.base_url, timeout=120) as http:
        hidden = http.post("/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {only_embeddings}"})
        assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "model_not_found"
        listed = http.get("/v1/models", headers={"Authorization": f"Bearer {only_embeddings}"}).json()["data"]
        assert [m["id"] for m in listed] == [EMBEDDER]
        auth = {"Authorization": f"Bearer {small}"}
        start_of_a_window()  # the reservation and its settling fall in one minute
        too_big = http.post("/v1/chat/completions", json=chat | {"max_tokens": 100}, headers=auth)
        assert too_big.status_code == 429 and "Requested" in too_big.json()["error"]["message"]
        answer = http.post("/v1/chat/completions", json=chat, headers=auth)
        assert answer.status_code == 200, answer.text
        used = answer.json()["usage"]["total_tokens"]
        # the reservation was settled to the upstream's usage
        after = http.get("/v1/models", headers=auth)
        assert int(after.headers["x-ratelimit-remaining-tokens"]) == 60 - used
