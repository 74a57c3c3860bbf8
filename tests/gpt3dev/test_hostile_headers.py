"""Requests any client can send that used to cost the server more than a line: a Host
outside ALLOWED_HOSTS (a 30-line traceback at ERROR each time) and a large body sent
chunked (no heap trim afterwards, since no Content-Length announced its size). Raw
to a real uvicorn server: httpx sends the Host it is given, and a body from a generator
chunked."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from tests.live_server import LiveServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = LiveServer(tmp_path_factory.mktemp("hostile"), LOG_LEVEL="info").start()
    yield live
    live.stop()


def _trims(server) -> float:
    text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=30).text
    match = re.search(r"^gpt3dev_heap_trims_total (\S+)$", text, re.M)
    assert match, "the trim counter is missing from /metrics"
    return float(match.group(1))


def test_a_disallowed_host_is_one_400_and_one_log_line_without_a_traceback(server):
    before = len(server.log_tail(10**6))
    answer = httpx.get(
        f"http://127.0.0.1:{server.port}/v1/models", headers={"Host": "evil.example", "X-Request-ID": "bad-host-1"}
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "disallowed_host" and "ALLOWED_HOSTS" in error["message"]
    time.sleep(0.5)
    log = server.log_tail(10**6)[before:]
    assert "Traceback" not in log and "ERROR" not in log, log
    assert "request_id=bad-host-1" in log and "status=400" in log
    warnings = [line for line in log.splitlines() if "DisallowedHost" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], log


def test_a_large_chunked_body_is_followed_by_a_heap_trim(server):
    before = _trims(server)
    payload = json.dumps({"model": "no-such-model", "prompt": "x" * (1536 * 1024)}).encode()
    pieces = (payload[i : i + 256 * 1024] for i in range(0, len(payload), 256 * 1024))
    request = httpx.Request(
        "POST", f"http://127.0.0.1:{server.port}/v1/completions",
        headers={"Content-Type": "application/json"}, content=pieces,
    )
    assert request.headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in request.headers
    with httpx.Client(timeout=30) as client:
        answer = client.send(request)
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "model_not_found", answer.text
    deadline = time.monotonic() + 10
    while _trims(server) <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _trims(server) == before + 1
