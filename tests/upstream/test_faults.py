"""The gateway (a real uvicorn server) in front of misbehaving upstream servers: failover
before the first byte, an error frame after it, ejection and recovery, a 503 when
everything is down, normalised errors and streams, the concurrency cap, and the key."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time

import httpx
import pytest

from bench.fake_upstream import FaultServer
from tests.api import post
from tests.live_server import LiveServer, free_port

pytestmark = [pytest.mark.e2e]

KEY = "sk-upstream-secret-7f3a9c1e5b"
BAD = ("drop", "refused", "stall", "malformed", "status_500")
CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 7}


@pytest.fixture(scope="module")
def faults():
    servers = {name: FaultServer(mode=name if name in ("drop", "stall", "malformed", "cut", "error_int_code",
                                                      "no_done", "status_500") else "ok", name=name).start()
               for name in ("ok", "ok2", "drop", "stall", "malformed", "cut", "error_int_code", "no_done",
                            "status_500", "flaky", "capped", "keyed")}
    yield servers
    for server in servers.values():
        server.stop()


def row(name: str, urls: list[str], **extra) -> dict:
    return {"name": name, "upstream": urls, "upstream_model": "upstream-name", "is_chat": True, "timeout": 2} | extra


@pytest.fixture(scope="module")
def gateway(faults, tmp_path_factory):
    refused = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    url = {name: server.base_url for name, server in faults.items()}
    url["refused"] = refused
    rows = [row(f"{bad}-{kind}", [url[bad], url["ok"]]) for bad in BAD for kind in ("json", "stream")]
    rows += [
        row("cut", [url["cut"]]),
        row("int-code", [url["error_int_code"]]),
        row("no-done", [url["no_done"]]),
        row("all-down", [refused, url["status_500"]]),
        row("flaky", [url["flaky"]]),
        row("capped", [url["capped"]], max_concurrency=1),
        row("keyed", [url["keyed"]], api_key_env="GW_TEST_UPSTREAM_KEY"),
        row("embed", [url["ok2"]], task="embeddings", is_chat=False),
    ]
    workdir = tmp_path_factory.mktemp("gateway-faults")
    registry = workdir / "registry.json"
    server = LiveServer(workdir, MODEL_REGISTRY_PATH=str(registry), GW_TEST_UPSTREAM_KEY=KEY, LOG_LEVEL="info",
                        UPSTREAM_HEALTH_INTERVAL="1", UPSTREAM_HEALTH_TIMEOUT="1", UPSTREAM_CONNECT_TIMEOUT="2",
                        DATABASE_URL=f"sqlite:///{workdir / 'own.sqlite3'}")
    rows.append(row("loop", [f"{server.base_url}/v1"], upstream_model="loop"))  # a row forwarding to itself
    registry.write_text(json.dumps({"models": rows}))
    server.start()
    yield server
    server.stop()


def events(response: httpx.Response) -> list:
    """The data of each SSE event: parsed JSON, or the string '[DONE]'."""
    out = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def chat(gateway: LiveServer, model: str, **extra) -> httpx.Response:
    return post(gateway, "/v1/chat/completions", CHAT | {"model": model} | extra, timeout=30)


def stream_chat(gateway: LiveServer, model: str, **extra) -> tuple[int, list]:
    body = CHAT | {"model": model, "stream": True} | extra
    with httpx.stream("POST", f"{gateway.base_url}/v1/chat/completions", json=body, timeout=30) as response:
        return response.status_code, events(response) if response.status_code == 200 else [response.read()]


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def content(chunks: list) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if isinstance(c, dict) and c.get("choices"))


@pytest.mark.perf  # asserts a wall-clock bound
@pytest.mark.parametrize("bad", BAD)
def test_a_failing_server_is_passed_over_before_the_first_byte(gateway, faults, bad):
    started = time.monotonic()
    answer = chat(gateway, f"{bad}-json")
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "hello from ok"
    assert answer.json()["model"] == f"{bad}-json"
    status, chunks = stream_chat(gateway, f"{bad}-stream")
    assert status == 200
    assert content(chunks) == "hello from ok! more words here"
    assert chunks[-1] == "[DONE]"
    assert all(c["model"] == f"{bad}-stream" for c in chunks[:-1])
    assert time.monotonic() - started < 12  # a stalled server costs the row's 2 s timeout, no more
    metrics = httpx.get(f"{gateway.base_url}/metrics").text
    assert metric(metrics, "gpt3dev_upstream_failures_total", model=f"{bad}-json") >= 1


def test_a_stream_cut_midway_ends_with_an_error_frame_and_done(gateway):
    status, chunks = stream_chat(gateway, "cut")
    assert status == 200
    assert content(chunks) == "hello from"
    error = chunks[-2]["error"]
    assert error["code"] == "upstream_error" and "mid-answer" in error["message"]
    assert chunks[-1] == "[DONE]"


@pytest.mark.perf  # asserts a wall-clock bound
def test_when_every_server_is_down_the_answer_is_a_prompt_503_with_retry_after(gateway):
    for _ in range(2):  # the first request tries both; the second finds both ejected
        started = time.monotonic()
        answer = chat(gateway, "all-down")
        assert answer.status_code == 503, answer.text
        assert int(answer.headers["Retry-After"]) >= 1
        assert answer.json()["error"]["code"] == "upstream_unavailable"
        assert "all-down" in answer.json()["error"]["message"]
        assert time.monotonic() - started < 5
    status, body = stream_chat(gateway, "all-down")
    assert status == 503


def test_integer_error_codes_become_null_and_the_message_stays(gateway):
    answer = chat(gateway, "int-code")
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] is None
    assert error["message"] == "This model's maximum context length is 2048 tokens."
    assert set(error) == {"message", "type", "param", "code"}
    status, body = stream_chat(gateway, "int-code")  # before any event: an HTTP error, not a stream
    assert status == 400 and json.loads(body[0])["error"]["code"] is None


def test_a_stream_without_done_gets_one_and_usage_follows_stream_options(gateway, faults):
    status, chunks = stream_chat(gateway, "no-done")
    assert status == 200 and chunks[-1] == "[DONE]"
    assert all("usage" not in c for c in chunks[:-1])  # not asked for: stripped
    sent = faults["no_done"].completions()[-1].body
    assert sent["model"] == "upstream-name" and sent["stream_options"] == {"include_usage": True}
    status, chunks = stream_chat(gateway, "no-done", stream_options={"include_usage": True})
    assert chunks[-2]["choices"] == [] and chunks[-2]["usage"]["total_tokens"] == 12
    assert chunks[-1] == "[DONE]"


def test_ejection_and_recovery_show_in_readyz_and_metrics(gateway, faults):
    def flaky_state() -> dict:
        models = httpx.get(f"{gateway.base_url}/readyz").json()["models"]
        return next(m for m in models if m["id"] == "flaky")

    def wait_for(healthy: bool) -> dict:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            state = flaky_state()
            if state["upstreams"] and state["upstreams"][0]["healthy"] is healthy:
                return state
            time.sleep(0.2)
        raise AssertionError(f"the upstream did not become healthy={healthy}: {state}")

    assert chat(gateway, "flaky").status_code == 200
    faults["flaky"].mode = "status_500"
    state = wait_for(False)
    assert state["loadable"] is False and "0 of 1" in state["detail"]
    assert metric(httpx.get(f"{gateway.base_url}/metrics").text, "gpt3dev_upstream_healthy", model="flaky") == 0
    assert chat(gateway, "flaky").status_code == 503
    faults["flaky"].mode = "ok"
    wait_for(True)
    assert metric(httpx.get(f"{gateway.base_url}/metrics").text, "gpt3dev_upstream_healthy", model="flaky") == 1
    assert chat(gateway, "flaky").status_code == 200


def test_the_concurrency_cap_holds_requests_until_a_slot_frees(gateway, faults):
    results: list[int] = []

    def one() -> None:
        status, chunks = stream_chat(gateway, "capped")
        results.append(status if chunks[-1] == "[DONE]" and content(chunks).startswith("hello") else -1)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [200] * 4
    assert faults["capped"].max_open_streams == 1


def test_embeddings_pass_through(gateway, faults):
    answer = post(gateway, "/v1/embeddings", {"model": "embed", "input": "hi"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "embed"
    assert answer.json()["data"][0]["embedding"] == [0.5, 0.25]
    assert faults["ok2"].completions()[-1].body["model"] == "upstream-name"


def test_requests_are_validated_here_before_any_upstream_sees_them(gateway, faults):
    before = len(faults["ok"].completions())
    answer = chat(gateway, "drop-json", temperature=7)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "temperature"
    answer = chat(gateway, "embed")
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "model"
    assert len(faults["ok"].completions()) == before


def test_the_upstream_key_reaches_the_upstream_and_nothing_else(gateway, faults):
    answer = chat(gateway, "keyed")
    assert answer.status_code == 200
    assert faults["keyed"].completions()[-1].headers["authorization"] == f"Bearer {KEY}"
    checks = [r for r in faults["keyed"].received if r.method == "GET"]
    assert checks and all(r.headers["authorization"] == f"Bearer {KEY}" for r in checks)
    status, chunks = stream_chat(gateway, "keyed")
    seen = [answer.text, json.dumps(chunks), httpx.get(f"{gateway.base_url}/readyz").text,
            httpx.get(f"{gateway.base_url}/metrics").text, httpx.get(f"{gateway.base_url}/v1/models/keyed").text,
            gateway.log_tail(10**7)]
    assert not any(KEY in text for text in seen)
    with sqlite3.connect(gateway.workdir / "own.sqlite3") as db:
        stored = db.execute("select upstream_api_key from models_api_modelentry where model_id='keyed'").fetchone()[0]
    assert stored and KEY not in stored and not re.search(r"7f3a9c1e5b", stored)


@pytest.mark.perf  # asserts a wall-clock bound
def test_a_row_that_forwards_to_itself_is_a_508_not_an_endless_loop(gateway):
    started = time.monotonic()
    answer = chat(gateway, "loop")
    assert answer.status_code == 508, answer.text
    error = answer.json()["error"]
    assert error["code"] == "upstream_loop" and "forwards in a loop" in error["message"]
    assert time.monotonic() - started < 10
