"""With a real model over uvicorn: tokens per minute reserved then settled to the real
usage, metrics and the access log moving after a stream."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from tests.live_server import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "SmolLM2-135M-Instruct"
KEY = "sk-gpt3dev-e2e-model-key-0123456789"


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    found = re.search(rf"^{name}\{{{re.escape(wanted)}\}} ([0-9.e+-]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def wait_until_loaded(http: httpx.Client, model: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = http.get("/readyz").json()["models"]
        if any(m["id"] == model and m["loaded"] for m in models):
            return
        time.sleep(0.5)
    raise AssertionError(f"{model} was not loaded within {timeout} s")


def start_of_a_window(room: float = 30.0) -> int:
    """Token limits count per fixed minute: wait, if need be, until at least ``room``
    seconds of the current minute are left, so the requests below share one window.
    Give the room the requests need (a wait costs half of it on average)."""
    left = 60 - time.time() % 60
    if left < room:
        time.sleep(left + 0.2)
    return int(time.time() // 60)


def test_tokens_metrics_and_access_log(tmp_path):
    # The model is loaded before the first request, so the two requests take seconds.
    server = LiveServer(tmp_path, API_KEYS=f"erin:{KEY}", RATE_LIMIT_TPM="1000", ACCESS_LOG_FORMAT="json",
                        PRELOAD_MODELS=MODEL, DATABASE_URL=f"sqlite:///{tmp_path / 'own.sqlite3'}").start()
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 12, "temperature": 0}
    try:
        with httpx.Client(base_url=server.base_url, headers=auth, timeout=120) as http:
            wait_until_loaded(http, MODEL)
            window = start_of_a_window(room=15)  # three short answers of a loaded model
            first = http.post("/v1/chat/completions", json=body)
            assert first.status_code == 200, first.text
            usage = first.json()["usage"]
            reserved = usage["prompt_tokens"] + 12
            assert first.headers["x-ratelimit-limit-tokens"] == "1000"
            assert int(first.headers["x-ratelimit-remaining-tokens"]) == 1000 - reserved
            chunks = []
            with http.stream("POST", "/v1/chat/completions",
                             json=body | {"stream": True, "stream_options": {"include_usage": True}}) as stream:
                assert stream.status_code == 200
                assert int(time.time() // 60) == window, "the requests took longer than the room left in the minute"
                # the first answer was settled to its real usage before this one reserved
                assert int(stream.headers["x-ratelimit-remaining-tokens"]) == 1000 - usage["total_tokens"] - reserved
                chunks = [line for line in stream.iter_lines() if line.startswith("data: ")]
            assert chunks[-1] == "data: [DONE]"
            too_big = http.post("/v1/chat/completions", json=body | {"max_tokens": 2000})
            assert too_big.status_code == 429 and "Requested" in too_big.json()["error"]["message"]
            text = http.get("/metrics").text
        assert metric(text, "gpt3dev_requests_total", model=MODEL, route="chat-completions", status="200") == 2
        assert metric(text, "gpt3dev_time_to_first_token_seconds_count", model=MODEL) == 2
        assert metric(text, "gpt3dev_completion_tokens_total", model=MODEL) == 2 * usage["completion_tokens"]
        assert metric(text, "gpt3dev_prompt_tokens_total", model=MODEL) == 2 * usage["prompt_tokens"]
        assert metric(text, "gpt3dev_inter_token_latency_seconds_count", model=MODEL) >= 1
        assert metric(text, "gpt3dev_model_loaded", model=MODEL) == 1
        assert metric(text, "gpt3dev_model_load_seconds_count", model=MODEL) == 1
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.startswith("{")]
    streamed = [entry for entry in lines if entry["path"] == "/v1/chat/completions" and entry["status"] == 200][-1]
    assert streamed["key"] == "erin" and streamed["model"] == MODEL
    assert streamed["prompt_tokens"] == usage["prompt_tokens"]
    assert streamed["completion_tokens"] == usage["completion_tokens"]
    assert streamed["ttft_ms"] is not None and streamed["duration_ms"] >= streamed["ttft_ms"]
    assert "Say hi." not in server.log_path.read_text()
