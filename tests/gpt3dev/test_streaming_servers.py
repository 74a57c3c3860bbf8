"""SSE leaves the server while the model is still generating, under uvicorn and under
`manage.py runserver` (daphne's ASGI runserver), and a client that leaves cancels it.

Proof without timing: the first frame is read while /readyz still counts the sequence
as running in the batch; a buffered stream could only arrive after the batch emptied.
"""

from __future__ import annotations

import sys
import time

import httpx
import pytest

from tests.live_server import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "SmolLM2-135M-Instruct"


class RunserverServer(LiveServer):
    def command(self) -> list[str]:
        return [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{self.port}"]


def smol_row(base_url: str) -> dict:
    models = httpx.get(f"{base_url}/readyz", timeout=10).json()["models"]
    return next(m for m in models if m["id"] == MODEL)


@pytest.mark.parametrize("server_class", [LiveServer, RunserverServer], ids=["uvicorn", "runserver"])
def test_tokens_stream_while_generating_and_leaving_cancels(tmp_path, server_class):
    server = server_class(tmp_path).start()
    try:
        body = {"model": MODEL, "prompt": "Count: 1, 2, 3,", "max_tokens": 8000, "stream": True,
                "ignore_eos": True, "temperature": 0}
        with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, timeout=120) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.iter_lines()
            first = next(line for line in lines if line)
            assert first.startswith("data: {")
            assert smol_row(server.base_url)["running"] == 1  # still generating: nothing buffered
        start = time.monotonic()  # the client has left: the batch must empty long before 8000 tokens
        while smol_row(server.base_url)["running"] != 0:
            assert time.monotonic() - start < 60, "the sequence kept running after the client left"
            time.sleep(0.2)
    finally:
        server.stop()


def test_non_streaming_request_is_cancelled_when_the_client_leaves(live_server_url):
    warm = httpx.post(f"{live_server_url}/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 1},
                      timeout=120)
    assert warm.status_code == 200  # the model is loaded before the clock of the real request starts
    body = {"model": MODEL, "prompt": "Count: 1, 2, 3,", "max_tokens": 8000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
        httpx.post(f"{live_server_url}/v1/completions", json=body, timeout=httpx.Timeout(60, read=4))
    start = time.monotonic()
    while smol_row(live_server_url)["running"] != 0:
        assert time.monotonic() - start < 60, "the sequence kept running after the client left"
        time.sleep(0.2)
