"""Upstream rows forward /tokenize, /detokenize, /v1/rerank and /score: a gateway (a real
uvicorn server loading no model) in front of a second gpt3dev serving the bundled
models gives the same answers as asking that server directly, under the client's id."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.live_server import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "SmolLM2-135M-Instruct"
EMBEDDER = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def gateway(live_server_url, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gateway-tokenize")
    registry = workdir / "registry.json"
    registry.write_text(json.dumps([
        {"name": "chat-upstream", "upstream": f"{live_server_url}/v1", "upstream_model": MODEL, "is_chat": True},
        {"name": "embed-upstream", "upstream": f"{live_server_url}/v1", "upstream_model": EMBEDDER,
         "task": "embeddings"},
    ]))
    server = LiveServer(workdir, MODEL_REGISTRY_PATH=str(registry), INCLUDE_DEFAULT_MODELS="0",
                        DATABASE_URL=f"sqlite:///{workdir / 'own.sqlite3'}").start()
    yield server.base_url
    server.stop()


@pytest.mark.parametrize("path, body", [
    ("/tokenize", {"prompt": "Hello there 🙂", "return_token_strs": True}),
    ("/v1/tokenize", {"messages": [{"role": "user", "content": "Hi"}]}),
    ("/detokenize", {"tokens": [19556, 5248]}),
])
def test_tokenize_is_forwarded(gateway, live_server_url, path, body):
    through = httpx.post(f"{gateway}{path}", json={"model": "chat-upstream", **body}, timeout=120)
    direct = httpx.post(f"{live_server_url}{path}", json={"model": MODEL, **body}, timeout=120)
    assert through.status_code == 200, through.text
    assert through.json() == direct.json()


def test_rerank_and_score_are_forwarded(gateway, live_server_url):
    body = {"query": "What is the capital of France?", "documents": ["Bananas.", "Paris is the capital of France."]}
    through = httpx.post(f"{gateway}/v2/rerank", json={"model": "embed-upstream", **body}, timeout=120).json()
    direct = httpx.post(f"{live_server_url}/v1/rerank", json={"model": EMBEDDER, **body}, timeout=120).json()
    assert through["model"] == "embed-upstream"
    assert through["results"] == direct["results"] and through["results"][0]["index"] == 1
    pairs = {"text_1": "cats", "text_2": ["a cat", "the stock market"]}
    scored = httpx.post(f"{gateway}/score", json={"model": "embed-upstream", **pairs}, timeout=120).json()
    assert scored["model"] == "embed-upstream"
    assert [d["score"] for d in scored["data"]] == [
        d["score"] for d in httpx.post(f"{live_server_url}/score", json={"model": EMBEDDER, **pairs}).json()["data"]]


def test_upstream_errors_come_back_in_openai_shape(gateway):
    answer = httpx.post(f"{gateway}/detokenize", json={"model": "chat-upstream", "tokens": [99999999]}, timeout=120)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "tokens"
    # Our own checks first: a bad field never reaches the upstream.
    local = httpx.post(f"{gateway}/v1/rerank", json={"model": "embed-upstream", "query": "q", "documents": []})
    assert local.status_code == 400 and local.json()["error"]["param"] == "documents"
    wrong = httpx.post(f"{gateway}/v1/rerank", json={"model": "chat-upstream", "query": "q", "documents": ["d"]})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "model"
