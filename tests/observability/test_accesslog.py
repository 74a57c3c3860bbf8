"""One access-log line per request: id, key, model, status, tokens, timings; no prompt
text unless ACCESS_LOG_PROMPTS asks for it."""

from __future__ import annotations

import json
import logging
import re

import pytest

from access.keys import create_api_key
from tests.api import post

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
    return post(client, "/v1/chat/completions", body, **headers)


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


# Values a client controls: the path, the model name, X-Request-ID (refused unless sane).
HOSTILE = ["x\nforged=1 key=admin", "a\rb", "tab\there", "\x1b[31mred\x1b[0m", "nul\x00", "del\x7f", "nel\x85",
           "ls\u2028"]


PLAIN_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"]+)(?: |$)')


def parse_plain(line: str) -> dict[str, object]:
    """A plain line back into its fields; fails unless the whole line is key=value pairs."""
    fields: dict[str, object] = {}
    position = 0
    for match in PLAIN_FIELD.finditer(line):
        assert match.start() == position, f"unparsable at {position}: {line!r}"
        name, value = match.groups()
        assert name not in fields, f"field {name} twice: {line!r}"
        fields[name] = json.loads(value) if value.startswith('"') else value
        position = match.end()
    assert position == len(line), line
    return fields


def _assert_one_clean_line(line: str) -> None:
    assert "\n" not in line and "\r" not in line and "\t" not in line, repr(line)
    assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or ch in "\u2028\u2029" for ch in line), repr(line)


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_a_forged_path_stays_on_one_quoted_line(client, access_lines, gpt3dev_settings, fmt):
    gpt3dev_settings["ACCESS_LOG_FORMAT"] = fmt
    client.get("/v1/models/x%0Aforged=1%09key=admin%1B[2J")
    assert len(access_lines) == 1
    line = access_lines[0]
    _assert_one_clean_line(line)
    if fmt == "json":
        assert json.loads(line)["path"] == "/v1/models/x\nforged=1\tkey=admin\x1b[2J"
    else:
        fields = parse_plain(line)
        assert fields["path"] == "/v1/models/x\nforged=1\tkey=admin\x1b[2J"
        assert fields["key"] == "-" and "forged" not in fields


@pytest.mark.parametrize("fmt", ["plain", "json"])
@pytest.mark.parametrize("model", HOSTILE)
def test_a_hostile_model_name_cannot_forge_a_record(client, access_lines, gpt3dev_settings, fmt, model):
    gpt3dev_settings["ACCESS_LOG_FORMAT"] = fmt
    body = {"model": model, "prompt": "hi"}
    response = post(client, "/v1/completions", body)
    assert response.status_code in (400, 404)  # DRF refuses a NUL; the others are unknown models
    assert len(access_lines) == 1
    line = access_lines[0]
    _assert_one_clean_line(line)
    if fmt == "json":
        entry = json.loads(line)
        assert entry["model"] == model and entry["key"] is None
    else:
        fields = parse_plain(line)
        assert fields["model"] == model and fields["key"] == "-" and "forged" not in fields


def test_plain_values_with_an_equals_sign_or_quote_are_quoted(client, access_lines):
    client.get('/v1/models/a=b"c')
    assert 'path="/v1/models/a=b\\"c"' in access_lines[-1]
    assert parse_plain(access_lines[-1])["path"] == '/v1/models/a=b"c'
