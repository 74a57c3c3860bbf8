"""A client that gives up is not a server error: over real HTTP, a non-streaming request
abandoned mid-generation and a stream closed after a few chunks are both logged and
counted as 499 ("client closed request"), and the key is charged the prompt plus the
tokens generated before the client left (not 0, not the whole reservation)."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import time

import httpx
import pytest

from tests.live_server import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "SmolLM2-135M-Instruct"
KEY = "sk-disconnect-test-key-0123456789"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
        "max_tokens": 400, "temperature": 0, "ignore_eos": True}


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    found = re.search(rf"^{name}\{{{re.escape(wanted)}\}} ([0-9.e+-]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def log_entries(server: LiveServer) -> list[dict]:
    return [json.loads(line) for line in server.log_path.read_text().splitlines() if line.startswith("{")]


def abandoned(server: LiveServer) -> list[dict]:
    """The generation requests logged as 499 (a slow /healthz poll at start-up may be one too)."""
    return [e for e in log_entries(server) if e["status"] == 499 and e["path"] == "/v1/chat/completions"]


def wait_for(predicate, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the server")


def test_disconnects_are_499_and_charged_what_was_generated(tmp_path):
    db = tmp_path / "own.sqlite3"
    server = LiveServer(tmp_path, API_KEYS=f"frank:{KEY}", RATE_LIMIT_TPM="1000000", ACCESS_LOG_FORMAT="json",
                        DATABASE_URL=f"sqlite:///{db}").start()
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        with httpx.Client(base_url=server.base_url, headers=auth, timeout=300) as http:
            warm = http.post("/v1/chat/completions", json=BODY | {"max_tokens": 2})
            assert warm.status_code == 200, warm.text
            warm_tokens = warm.json()["usage"]["total_tokens"]
            # A stream read for a few chunks, then dropped.
            with http.stream("POST", "/v1/chat/completions", json=BODY | {"stream": True}) as stream:
                assert stream.status_code == 200
                chunks = 0
                for line in stream.iter_lines():
                    chunks += line.startswith("data: ")
                    if chunks == 4:
                        break
        # A non-streaming request abandoned once tokens are being generated.
        with httpx.Client(base_url=server.base_url, headers=auth, timeout=300) as http:
            before = http.get("/metrics").text
        generated_before = metric(before, "gpt3dev_completion_tokens_total", model=MODEL)
        payload = json.dumps(BODY).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            sock.sendall(
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload
            )

            def generating() -> bool:
                text = httpx.get(f"{server.base_url}/metrics", timeout=30).text
                return metric(text, "gpt3dev_completion_tokens_total", model=MODEL) > generated_before

            wait_for(generating)  # tokens of this request are being produced
            time.sleep(1.0)
        # the socket is closed: the client gave up before the answer
        gone = wait_for(lambda: abandoned(server) if len(abandoned(server)) == 2 else None)
        text = httpx.get(f"{server.base_url}/metrics", timeout=30).text
    finally:
        server.stop()
    assert not [e for e in log_entries(server) if e["status"] >= 500]
    assert metric(text, "gpt3dev_requests_total", model=MODEL, route="chat-completions", status="499") == 2
    assert metric(text, "gpt3dev_requests_total", model=MODEL, route="chat-completions", status="500") == 0
    for entry in gone:
        assert entry["key"] == "frank" and entry["prompt_tokens"] > 0
        assert 1 <= entry["completion_tokens"] < 400  # cut short, but something was generated
    assert generated_before < metric(text, "gpt3dev_completion_tokens_total", model=MODEL)
    # The key's minute(s) hold the warm-up's usage plus what each abandoned request used.
    with sqlite3.connect(db) as conn:
        charged = conn.execute("SELECT SUM(tokens) FROM access_ratelimitwindow").fetchone()[0]
    assert charged == warm_tokens + sum(e["prompt_tokens"] + e["completion_tokens"] for e in gone)
