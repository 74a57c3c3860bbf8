"""The gateway (a real uvicorn server) in front of hostile or broken upstream servers
(bench.fake_upstream): nothing of an upstream's error body but a recognised message
reaches a client, never a key; our 503s name the row, not internal URLs; redirects are
failures; huge answers are cut without the memory staying; malformed and dripping
streams end with an error frame and [DONE]; a huge reported usage costs nothing on the
event loop; a key's tokens-per-minute holds under concurrency and for embeddings; and a
row re-pointed at an internal address behind the registry's back is refused when
connecting."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from bench.fake_upstream import BIG_USAGE, FaultServer
from tests.access.test_e2e_model import start_of_a_window
from tests.live_server import ROOT, LiveServer, free_port
from tests.upstream.test_faults import chat, content, events, metric

pytestmark = [pytest.mark.e2e]

KEY = "sk-hardening-upstream-3c9d1f7a2b"
CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 7}
MODES = {"ok": "ok", "html": "html_error", "echo": "echo_auth", "redirect": "redirect", "huge": "huge",
         "bad_event": "bad_event", "drip": "drip", "big_usage": "big_usage", "budget": "ok", "embed": "ok",
         "target": "ok"}


@pytest.fixture(scope="module")
def faults():
    servers = {name: FaultServer(mode=mode, name=name).start() for name, mode in MODES.items()}
    servers["budget"].own_max_tokens = 1000  # generates to its own limit without max_tokens
    yield servers
    for server in servers.values():
        server.stop()


def row(name: str, urls: list[str], **extra) -> dict:
    return {"name": name, "upstream": urls, "upstream_model": "upstream-name", "is_chat": True, "timeout": 2} | extra


@pytest.fixture(scope="module")
def gateway(faults, tmp_path_factory):
    url = {name: server.base_url for name, server in faults.items()}
    rows = [
        row("html", [url["html"]]),
        row("echo", [url["echo"]], api_key_env="GW_HARDENING_KEY"),
        row("all-down", [f"http://127.0.0.1:{free_port()}/v1"]),
        row("redirect", [url["redirect"]]),
        row("redirect-then-ok", [url["redirect"], url["ok"]]),
        row("huge", [url["huge"]], timeout=60),
        row("bad-event", [url["bad_event"]]),
        row("drip", [url["drip"]]),
        row("big-usage", [url["big_usage"]]),
        row("budget", [url["budget"]]),  # no max_context_tokens: reserves UPSTREAM_DEFAULT_MAX_TOKENS
        row("embed", [url["embed"]], task="embeddings", is_chat=False),
        row("rebound", [url["target"]]),
    ]
    workdir = tmp_path_factory.mktemp("gateway-hardening")
    registry = workdir / "registry.json"
    registry.write_text(json.dumps({"models": rows}))
    server = LiveServer(workdir, MODEL_REGISTRY_PATH=str(registry), GW_HARDENING_KEY=KEY, LOG_LEVEL="info",
                        UPSTREAM_ALLOWED_HOSTS="127.0.0.1", UPSTREAM_DEFAULT_MAX_TOKENS="1000",
                        UPSTREAM_HEALTH_INTERVAL="1", DATABASE_URL=f"sqlite:///{workdir / 'own.sqlite3'}")
    server.start()
    yield server
    server.stop()


def stream(gateway: LiveServer, model: str, timeout: float = 30, **extra) -> tuple[int, list]:
    body = CHAT | {"model": model, "stream": True} | extra
    with httpx.stream("POST", f"{gateway.base_url}/v1/chat/completions", json=body, timeout=timeout) as response:
        return response.status_code, events(response) if response.status_code == 200 else [response.read()]


def create_key(gateway: LiveServer, name: str, *args: str) -> str:
    made = subprocess.run([sys.executable, "manage.py", "create_api_key", name, *args], cwd=ROOT, env=gateway.env,
                          check=True, capture_output=True, text=True, timeout=120)
    return made.stdout.strip()


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak) of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0]) * 1024
    return out


# ------------------------------------------------------------------ what reaches clients
def test_an_upstream_error_page_never_reaches_the_client(gateway):
    for status, text in ((chat(gateway, "html").status_code, chat(gateway, "html").text),
                         stream(gateway, "html")):
        assert status == 400
        text = text if isinstance(text, str) else text[0].decode()
        error = json.loads(text)["error"]
        assert error["message"] == "The upstream server answered 400."
        assert "hunter2" not in text and "<html" not in text and "10.1.2.3" not in text


def test_an_echoed_authorization_header_never_reaches_the_client(gateway, faults):
    answer = chat(gateway, "echo")
    assert faults["echo"].completions()[-1].headers["authorization"] == f"Bearer {KEY}"  # it was echoed
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert KEY not in answer.text and "3c9d1f7a2b" not in answer.text
    assert error["message"].startswith("Invalid credentials: Authorization:") and "[redacted]" in error["message"]
    assert error["code"] == "bad_key"
    status, body = stream(gateway, "echo")
    assert status == 400 and KEY not in body[0].decode()


def test_a_503_names_the_row_not_its_internal_urls(gateway):
    answer = chat(gateway, "all-down")
    assert answer.status_code == 503
    message = answer.json()["error"]["message"]
    assert "all-down" in message
    assert "127.0.0.1" not in message and "http" not in message and "refused" not in message
    detail = next(m for m in httpx.get(f"{gateway.base_url}/readyz").json()["models"] if m["id"] == "all-down")
    assert detail["upstreams"][0]["last_error"]  # operators see it there (and in the log)


def test_an_upstream_redirect_is_a_failed_server_not_an_answer(gateway):
    answer = chat(gateway, "redirect")
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "upstream_unavailable"
    answer = chat(gateway, "redirect-then-ok")
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "hello from ok"
    metrics = httpx.get(f"{gateway.base_url}/metrics").text
    assert metric(metrics, "gpt3dev_upstream_failures_total", model="redirect-then-ok", reason="status") >= 1


# ---------------------------------------------------------------- what the gateway holds
@pytest.mark.perf  # asserts wall-clock and resident-memory bounds
def test_a_huge_answer_is_cut_with_an_error_and_the_memory_returns(gateway, faults):
    before = memory(gateway.pid)
    started = time.monotonic()
    answer = chat(gateway, "huge")
    assert answer.status_code == 502, answer.text[:300]
    error = answer.json()["error"]
    assert error["code"] == "upstream_response_too_large" and "UPSTREAM_MAX_RESPONSE_BYTES" in error["message"]
    status, chunks = stream(gateway, "huge")
    assert status == 200 and content(chunks) == "hello"
    cut = chunks[-2]["error"]
    assert cut["code"] == "upstream_error" and "UPSTREAM_MAX_RESPONSE_BYTES" in cut["message"]
    assert chunks[-1] == "[DONE]"
    assert time.monotonic() - started < 20
    after = memory(gateway.pid)
    assert after["VmHWM"] - before["VmHWM"] < 100 * 2**20  # 200 MB sent twice: never held
    assert after["VmRSS"] - before["VmRSS"] < 64 * 2**20
    assert chat(gateway, "redirect-then-ok").status_code == 200  # the gateway carries on
    metrics = httpx.get(f"{gateway.base_url}/metrics").text
    assert metric(metrics, "gpt3dev_upstream_failures_total", model="huge", reason="too_large") == 2
    assert metric(metrics, "gpt3dev_upstream_healthy", model="huge") == 1  # the request's doing: not ejected


def test_a_malformed_stream_event_ends_with_an_error_frame_and_done(gateway):
    status, chunks = stream(gateway, "bad-event")
    assert status == 200
    assert content(chunks) == "hello"
    error = chunks[-2]["error"]
    assert error["code"] == "upstream_error" and "malformed" in error["message"]
    assert chunks[-1] == "[DONE]"
    metrics = httpx.get(f"{gateway.base_url}/metrics").text
    assert metric(metrics, "gpt3dev_upstream_failures_total", model="bad-event", reason="malformed") >= 1
    assert "Traceback" not in gateway.log_tail(10**6)


@pytest.mark.perf  # asserts a wall-clock bound
def test_a_dripping_stream_is_cut_at_the_timeout_with_an_error_frame(gateway):
    started = time.monotonic()
    status, chunks = stream(gateway, "drip", timeout=20)  # a byte every 0.5 s; the row's timeout is 2 s
    elapsed = time.monotonic() - started
    assert status == 200 and content(chunks) == "hello"
    error = chunks[-2]["error"]
    assert error["code"] == "upstream_error" and "no event within the 2 s timeout" in error["message"]
    assert chunks[-1] == "[DONE]"
    assert elapsed < 6


def slowest_healthz_during(gateway: LiveServer, work) -> tuple[float, object]:
    """The slowest /healthz answer while ``work()`` runs, and what it returned."""
    slowest = [0.0]
    done = threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=30) as http:
            while not done.is_set():
                started = time.monotonic()
                http.get(f"{gateway.base_url}/healthz")
                slowest[0] = max(slowest[0], time.monotonic() - started)
                time.sleep(0.01)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        result = work()
    finally:
        done.set()
        prober.join(30)
    return slowest[0], result


@pytest.mark.perf  # asserts a /healthz latency bound
def test_a_huge_reported_usage_does_not_stall_the_event_loop(gateway):
    def big_usage() -> tuple[httpx.Response, tuple[int, list]]:
        return chat(gateway, "big-usage"), stream(gateway, "big-usage", stream_options={"include_usage": True})

    before = metric(httpx.get(f"{gateway.base_url}/metrics").text, "gpt3dev_completion_tokens_total",
                    model="big-usage")
    # A million tokens once cost seconds of the event loop; a busy test machine can delay
    # one /healthz on its own, so the best of three tries must be under 0.1 s.
    tries = [slowest_healthz_during(gateway, big_usage) for _ in range(3)]
    for _, (answer, (status, chunks)) in tries:
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == BIG_USAGE
        assert status == 200 and chunks[-2]["usage"]["completion_tokens"] == BIG_USAGE
    fastest = min(slowest for slowest, _ in tries)
    assert fastest < 0.1, f"/healthz took {fastest:.3f} s at best while a usage of {BIG_USAGE} was counted"
    text = httpx.get(f"{gateway.base_url}/metrics").text
    assert metric(text, "gpt3dev_completion_tokens_total", model="big-usage") - before == 6 * BIG_USAGE
    assert metric(text, "gpt3dev_inter_token_latency_seconds_count", model="big-usage") >= BIG_USAGE


# -------------------------------------------------------------------------- URL policy
def test_a_row_repointed_at_an_internal_address_is_refused_when_connecting(gateway, faults):
    assert chat(gateway, "rebound").status_code == 200
    seen = len(faults["target"].received)
    # Behind the registry's back (no validation on this path): 0.0.0.0 reaches this
    # machine, the way a name re-pointed after the save (DNS rebinding) would.
    with sqlite3.connect(gateway.workdir / "own.sqlite3") as db:
        db.execute("update models_api_modelentry set source=? where model_id='rebound'",
                   (f"http://0.0.0.0:{faults['target'].port}/v1",))
    answer = chat(gateway, "rebound")
    assert answer.status_code == 503, answer.text
    assert "0.0.0.0" not in answer.json()["error"]["message"]
    assert len(faults["target"].received) == seen  # nothing reached it
    detail = next(m for m in httpx.get(f"{gateway.base_url}/readyz").json()["models"] if m["id"] == "rebound")
    assert any("URL policy" in (s["last_error"] or "") for s in detail["upstreams"])


# ------------------------------------------------------------------------ a key's limits
# (the first key made turns the gateway's open access off: tests without keys come first)
def test_a_completion_without_max_tokens_is_sent_with_openais_default(gateway, faults):
    answer = httpx.post(f"{gateway.base_url}/v1/completions", json={"model": "budget", "prompt": "Hi"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert faults["budget"].completions()[-1].body["max_tokens"] == 16
    assert answer.json()["usage"]["completion_tokens"] == 16


def test_concurrent_upstream_requests_stop_at_the_keys_tokens_per_minute(gateway, faults):
    key = create_key(gateway, "tpm-3000", "--tpm", "3000")
    auth = {"Authorization": f"Bearer {key}"}
    results: list[httpx.Response] = []
    body = {"model": "budget", "messages": [{"role": "user", "content": "Hi"}]}  # no max_tokens

    def one() -> None:
        results.append(httpx.post(f"{gateway.base_url}/v1/chat/completions", json=body, headers=auth, timeout=30))

    window = start_of_a_window(room=15)  # five answers of a fake upstream, each in milliseconds
    threads = [threading.Thread(target=one) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    answered = [r for r in results if r.status_code == 200]
    refused = [r for r in results if r.status_code == 429]
    assert len(answered) + len(refused) == 5
    assert len(answered) == 2  # each reserves about 1 + 1000 tokens (UPSTREAM_DEFAULT_MAX_TOKENS)
    assert all(r.json()["error"]["code"] == "rate_limit_exceeded" for r in refused)
    used = sum(r.json()["usage"]["total_tokens"] for r in answered)
    assert used <= 3000
    with sqlite3.connect(gateway.workdir / "own.sqlite3") as db:
        charged = db.execute("select sum(tokens) from access_ratelimitwindow where window >= ?",
                             (window,)).fetchone()[0]
    assert charged == used  # settled to the upstream's usage


def test_an_embeddings_request_over_the_keys_tokens_per_minute_is_a_429_before_it_runs(gateway, faults):
    key = create_key(gateway, "embed-tpm-3000", "--tpm", "3000")
    before = len(faults["embed"].completions())
    inputs = ["a long input sentence " * 36] * 256  # about 200 tokens each by the four-characters rule
    answer = httpx.post(f"{gateway.base_url}/v1/embeddings", json={"model": "embed", "input": inputs},
                        headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert answer.status_code == 429, answer.text[:300]
    error = answer.json()["error"]
    assert error["param"] == "input" and "Requested" in error["message"]
    assert len(faults["embed"].completions()) == before  # the upstream never saw it
    small = httpx.post(f"{gateway.base_url}/v1/embeddings", json={"model": "embed", "input": "hi"},
                       headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert small.status_code == 200
