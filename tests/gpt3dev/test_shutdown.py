"""Graceful shutdown: after SIGTERM new requests get 503 while in-flight ones finish."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from core import lifecycle
from gpt3dev import shutdown
from tests.live_server import LiveServer


@pytest.fixture
def draining():
    lifecycle.mark_draining()
    yield
    lifecycle.reset_for_tests()


@pytest.mark.django_db
def test_draining_refuses_api_and_readiness_but_not_liveness(client, draining):
    response = client.get("/v1/models")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "server_shutting_down"
    assert response["Retry-After"] == "5"
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


@pytest.mark.e2e
def test_sigterm_drains_and_exits(tmp_path):
    server = LiveServer(tmp_path, LOG_LEVEL="info", DATABASE_URL=f"sqlite:///{tmp_path / 'own.sqlite3'}").start()
    try:
        assert httpx.get(f"{server.base_url}/v1/models", timeout=10).status_code == 200
        server.process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down cleanly: -SIGTERM, not a crash
        assert server.process.wait(timeout=20) in (0, -signal.SIGTERM)
    finally:
        server.stop()
    log = server.log_path.read_text()
    assert "Shutting down: no new requests" in log
    assert "Finished server process" in log
    assert "NO API KEY IS CONFIGURED" in log  # an open server says so at start-up


def read_stream(response) -> list[str]:
    return [line for line in response.iter_lines() if line.startswith("data: ")]


@pytest.mark.e2e
@pytest.mark.model
def test_an_in_flight_stream_finishes_after_sigterm(tmp_path):
    server = LiveServer(tmp_path, SHUTDOWN_GRACE_SECONDS="60").start()
    body = {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "Count to fifty."}],
            "max_tokens": 48, "temperature": 0, "stream": True, "ignore_eos": True}
    try:
        with httpx.Client(timeout=120) as http:
            with http.stream("POST", f"{server.base_url}/v1/chat/completions", json=body) as response:
                assert response.status_code == 200
                lines = response.iter_lines()
                first = next(line for line in lines if line.startswith("data: "))
                server.process.send_signal(signal.SIGTERM)
                time.sleep(0.5)
                with pytest.raises(httpx.ConnectError):  # the listening socket is closed
                    httpx.get(f"{server.base_url}/v1/models", timeout=5)
                rest = [line for line in lines if line.startswith("data: ")]
        assert first and rest[-1] == "data: [DONE]"
        assert not any('"error"' in line for line in rest)
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        server.stop()


def test_requests_still_running_after_the_grace_period_are_cancelled(gpt3dev_settings, monkeypatch):
    import asyncio

    gpt3dev_settings["SHUTDOWN_GRACE_SECONDS"] = 0
    monkeypatch.setattr(shutdown, "install_signal_handlers", lambda: None)
    monkeypatch.setattr(shutdown, "_apps", [])
    cancelled = []

    async def endless(scope, receive, send):
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(scope["path"])
            raise

    app = shutdown.GracefulASGI(endless)

    async def main():
        task = asyncio.create_task(app({"type": "http", "path": "/v1/slow"}, None, None))
        await asyncio.sleep(0.05)
        shutdown.start_draining()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)

    try:
        asyncio.run(main())
    finally:
        lifecycle.reset_for_tests()
    assert cancelled == ["/v1/slow"]
