"""One access-log line per request: id, key, model, status, tokens, timings; no prompt
text unless ACCESS_LOG_PROMPTS asks for it."""

from __future__ import annotations

import json
import logging

import pytest

from access.keys import create_api_key

pytestmark = pytest.mark.django_db


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def access_lines():
    handler = Lines()
    logger = logging.getLogger("gpt3dev.access")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def chat(client, content: str, **headers):
    body = {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": content}], "temperature": 9}
    return client.post("/v1/chat/completions", data=json.dumps(body), content_type="application/json", **headers)


def test_plain_line_echoes_the_request_id(client, access_lines):
    response = client.get("/v1/models", HTTP_X_REQUEST_ID="trace-123")
    assert response["X-Request-ID"] == "trace-123"
    assert len(access_lines) == 1
    line = access_lines[0]
    for part in ("request_id=trace-123", "method=GET", "path=/v1/models", "status=200", "key=-", "duration_ms="):
        assert part in line, line


def test_a_request_id_is_made_when_none_or_a_bad_one_is_sent(client, access_lines):
    made = client.get("/healthz")["X-Request-ID"]
    assert made.startswith("req_")
    odd = client.get("/healthz", HTTP_X_REQUEST_ID="bad id with spaces\n")["X-Request-ID"]
    assert odd.startswith("req_")
    assert len(access_lines) == 2


def test_json_line_names_key_model_and_status(client, access_lines, gpt3dev_settings):
    gpt3dev_settings["ACCESS_LOG_FORMAT"] = "json"
    _, key = create_api_key(name="carol")
    response = chat(client, "top secret words", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 400
    entry = json.loads(access_lines[-1])
    assert entry["key"] == "carol"
    assert entry["model"] == "SmolLM2-135M-Instruct"
    assert entry["status"] == 400
    assert entry["request_id"] == response["X-Request-ID"]
    assert {"prompt_tokens", "completion_tokens", "ttft_ms", "duration_ms"} <= set(entry)
    assert "top secret words" not in access_lines[-1]  # no prompt text by default


def test_prompts_are_logged_only_when_asked(client, access_lines, gpt3dev_settings):
    gpt3dev_settings["ACCESS_LOG_PROMPTS"] = True
    chat(client, "please log me")
    assert "please log me" in access_lines[-1]


def test_off_writes_nothing(client, access_lines, gpt3dev_settings):
    gpt3dev_settings["ACCESS_LOG_FORMAT"] = "off"
    client.get("/v1/models")
    assert access_lines == []


def test_401_and_429_lines(client, access_lines):
    create_api_key(name="dave", requests_per_minute=1)
    client.get("/v1/models")
    assert "status=401" in access_lines[-1] and "key=-" in access_lines[-1]
