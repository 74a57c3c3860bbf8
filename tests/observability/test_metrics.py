"""/metrics: Prometheus text, request counters by route/model/status, generation timings,
engine gauges; and the same numbers added up over several uvicorn workers."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from prometheus_client import REGISTRY

from core import usage
from core.usage import Usage
from observability import metrics
from tests.live_server import LiveServer

pytestmark = pytest.mark.django_db


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_metrics_endpoint_speaks_prometheus(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    for name in ("gpt3dev_requests_total", "gpt3dev_request_duration_seconds", "gpt3dev_time_to_first_token_seconds",
                 "gpt3dev_inter_token_latency_seconds", "gpt3dev_prompt_tokens_total",
                 "gpt3dev_completion_tokens_total", "gpt3dev_queue_depth", "gpt3dev_running_batch_size",
                 "gpt3dev_model_loaded", "gpt3dev_model_load_seconds"):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name


def test_metrics_can_be_turned_off(client, gpt3dev_settings):
    gpt3dev_settings["METRICS_ENABLED"] = False
    assert client.get("/metrics").status_code == 404


def test_requests_are_counted_by_route_model_and_status(client):
    ok = sample("gpt3dev_requests_total", route="list-models", model="", status="200")
    missing = sample("gpt3dev_requests_total", route="retrieve-model", model="", status="404")
    bad = sample("gpt3dev_requests_total", route="chat-completions", model="", status="400")
    embeddings_model = sample("gpt3dev_requests_total", route="chat-completions", model="all-MiniLM-L6-v2",
                              status="400")
    found = sample("gpt3dev_requests_total", route="retrieve-model", model="all-MiniLM-L6-v2", status="200")
    durations = sample("gpt3dev_request_duration_seconds_count", route="list-models", model="")
    client.get("/v1/models")
    client.get("/v1/models")
    client.get("/v1/models/nope")
    client.get("/v1/models/all-MiniLM-L6-v2")
    client.post("/v1/chat/completions", data=json.dumps({"model": "made-up-name", "messages": []}),
                content_type="application/json")
    client.post("/v1/chat/completions", content_type="application/json", data=json.dumps(
        {"model": "all-MiniLM-L6-v2", "messages": [{"role": "user", "content": "hi"}]}))  # wrong task: 400
    assert sample("gpt3dev_requests_total", route="list-models", model="", status="200") == ok + 2
    assert sample("gpt3dev_requests_total", route="retrieve-model", model="", status="404") == missing + 1
    # a client's made-up model name never becomes a label value; a resolved one does
    assert sample("gpt3dev_requests_total", route="chat-completions", model="", status="400") == bad + 1
    assert sample("gpt3dev_requests_total", route="chat-completions", model="all-MiniLM-L6-v2",
                  status="400") == embeddings_model + 1
    assert sample("gpt3dev_requests_total", route="retrieve-model", model="all-MiniLM-L6-v2",
                  status="200") == found + 1
    assert sample("gpt3dev_request_duration_seconds_count", route="list-models", model="") == durations + 2
    text = client.get("/metrics").content.decode()
    assert re.search(r'gpt3dev_requests_total\{model="",route="list-models",status="200"\} \d', text)


def test_generation_timer_observes_ttft_inter_token_and_tokens():
    model = "timer-test-model"
    used = Usage(model=model, input_tokens=7)
    timer = metrics.GenerationTimer(used)
    timer.tokens(1)
    time.sleep(0.01)
    timer.tokens(2)
    timer.done()
    assert used.output_tokens == 3 and used.ttft is not None
    assert sample("gpt3dev_prompt_tokens_total", model=model) == 0  # counted when the request ends
    usage.finish(used)
    assert sample("gpt3dev_time_to_first_token_seconds_count", model=model) == 1
    assert sample("gpt3dev_inter_token_latency_seconds_count", model=model) == 2
    assert sample("gpt3dev_inter_token_latency_seconds_sum", model=model) >= 0.009
    assert sample("gpt3dev_prompt_tokens_total", model=model) == 7
    assert sample("gpt3dev_completion_tokens_total", model=model) == 3


def test_non_streaming_answers_count_their_tokens_at_the_end():
    model = "timer-test-json"
    used = Usage(model=model, input_tokens=3)
    timer = metrics.GenerationTimer(used)
    timer.first_token()
    timer.done(5)
    usage.finish(used)
    assert sample("gpt3dev_time_to_first_token_seconds_count", model=model) == 1
    assert sample("gpt3dev_inter_token_latency_seconds_count", model=model) == 4
    assert sample("gpt3dev_completion_tokens_total", model=model) == 5


class FakeGenerator:
    def __init__(self) -> None:
        self.running, self.waiting = 3, 5

    def stats(self) -> dict:
        return {"running": self.running, "waiting": self.waiting}


class FakeEngine:
    """Stands in for the engine's bookkeeping only: which models are loaded, their stats."""

    def __init__(self, loaded: list[str], generator: FakeGenerator) -> None:
        self.loaded = loaded
        self.generator = generator

    def loaded_models(self) -> list[str]:
        return list(self.loaded)

    def model_stats(self) -> dict[str, dict]:
        return {model: self.generator.stats() for model in self.loaded}


def test_engine_gauges_and_load_time(monkeypatch):
    from models_api import engine as engine_module

    generator = FakeGenerator()
    fake_engine = FakeEngine(["fake-model"], generator)
    monkeypatch.setattr(engine_module, "_engine", fake_engine)
    monkeypatch.setattr(metrics, "_engine_stats", fake_engine.model_stats)
    metrics.model_loaded("fake-model", generator, 2.5)
    assert sample("gpt3dev_model_load_seconds_count", model="fake-model") == 1
    assert sample("gpt3dev_model_load_seconds_sum", model="fake-model") == 2.5
    assert sample("gpt3dev_model_loaded", model="fake-model") == 1
    assert sample("gpt3dev_running_batch_size", model="fake-model") == 3
    assert sample("gpt3dev_queue_depth", model="fake-model") == 5
    generator.running, generator.waiting = 1, 0
    metrics.refresh_engine_gauges()
    assert sample("gpt3dev_running_batch_size", model="fake-model") == 1
    assert sample("gpt3dev_queue_depth", model="fake-model") == 0
    fake_engine.loaded = []  # unloaded: the gauges go to zero
    metrics.refresh_engine_gauges()
    assert sample("gpt3dev_model_loaded", model="fake-model") == 0


@pytest.mark.e2e
def test_counts_add_up_over_several_workers(tmp_path):
    """Two uvicorn workers, prometheus-client's multiprocess mode: whichever worker
    answers /metrics, it reports every worker's requests."""
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()

    class TwoWorkers(LiveServer):
        def command(self) -> list[str]:
            return [*super().command(), "--workers", "2"]

    server = TwoWorkers(tmp_path / "server", PROMETHEUS_MULTIPROC_DIR=str(multiproc),
                        DATABASE_URL=f"sqlite:///{tmp_path / 'own.sqlite3'}").start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            for _ in range(3):  # let both workers start answering
                http.get("/healthz")
        for _ in range(12):  # a new connection each time, so both workers get some
            response = httpx.get(f"{server.base_url}/v1/models", timeout=10)
            assert response.status_code == 200
        for _ in range(4):
            text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
            found = re.search(r'gpt3dev_requests_total\{model="",route="list-models",status="200"\} ([0-9.]+)', text)
            assert found and float(found.group(1)) == 12.0, text[:2000]
        pids = {p.name.split("_")[-1] for p in multiproc.glob("*.db")}
        assert len(pids) >= 2, sorted(p.name for p in multiproc.glob("*.db"))  # both workers wrote samples
    finally:
        server.stop()


def test_metrics_imports_neither_the_engine_nor_the_access_log():
    """No import cycle metrics -> models_api.engine -> metrics (or through selectors and
    the access log): the engine registers its stats with metrics instead."""
    import ast
    from pathlib import Path

    import observability.metrics

    tree = ast.parse(Path(observability.metrics.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {name for name in imported
                if name and (name.startswith("models_api") or name == "observability.accesslog")}
