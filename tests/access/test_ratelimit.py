"""Per-key limits: OpenAI's x-ratelimit-* headers on every answer, 429 with Retry-After,
token reservations settled to the real usage."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
from asgiref.sync import async_to_sync

from access.keys import Principal
from access.models import RateLimitWindow
from access.ratelimit import LimitState, admit_request, current_window, reserve_tokens, settle_tokens
from completions.serving_chat import chat
from completions.serving_completion import completion
from core.errors import APIError
from tests.access.conftest import bearer
from tests.openai_schema import assert_matches_schema

pytestmark = pytest.mark.django_db

HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
           "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")


@pytest.fixture(autouse=True)
def not_at_a_minute_boundary():
    """Windows are fixed minutes: do not start a counting test in a minute's last seconds."""
    if time.time() % 60 > 57:
        time.sleep(60 - time.time() % 60 + 0.05)


def test_requests_per_minute_then_429(client, make_key):
    _, key = make_key(requests_per_minute=2, tokens_per_minute=1000)
    first = client.get("/v1/models", **bearer(key))
    assert first.status_code == 200
    assert all(name in first for name in HEADERS)
    assert first["x-ratelimit-limit-requests"] == "2"
    assert first["x-ratelimit-remaining-requests"] == "1"
    assert first["x-ratelimit-limit-tokens"] == "1000"
    assert first["x-ratelimit-remaining-tokens"] == "1000"
    assert first["x-ratelimit-reset-requests"].endswith("s")
    # a 4xx answer carries them too, and counts
    missing = client.get("/v1/models/nope", **bearer(key))
    assert missing.status_code == 404
    assert missing["x-ratelimit-remaining-requests"] == "0"
    limited = client.get("/v1/models", **bearer(key))
    assert limited.status_code == 429
    body = limited.json()
    assert_matches_schema(body, "ErrorResponse")
    assert body["error"]["type"] == "rate_limit_error"
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert "requests per min" in body["error"]["message"] and "Limit 2" in body["error"]["message"]
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert limited["x-ratelimit-remaining-requests"] == "0"


def test_limits_are_per_key(client, make_key):
    _, alice = make_key("alice", requests_per_minute=1)
    _, bob = make_key("bob", requests_per_minute=1)
    assert client.get("/v1/models", **bearer(alice)).status_code == 200
    assert client.get("/v1/models", **bearer(alice)).status_code == 429
    assert client.get("/v1/models", **bearer(bob)).status_code == 200


def test_defaults_come_from_settings_and_zero_is_unlimited(client, make_key, gpt3dev_settings):
    gpt3dev_settings["RATE_LIMIT_RPM"] = 1
    _, limited = make_key("limited")
    _, unlimited = make_key("unlimited", requests_per_minute=0)
    assert client.get("/v1/models", **bearer(limited)).status_code == 200
    assert client.get("/v1/models", **bearer(limited)).status_code == 429
    for _ in range(3):
        response = client.get("/v1/models", **bearer(unlimited))
        assert response.status_code == 200
        assert "x-ratelimit-limit-requests" not in response


def test_env_keys_get_the_default_limits(client, gpt3dev_settings):
    gpt3dev_settings["API_KEYS"] = ["ci:sk-env-ci-0123456789abcdef"]
    gpt3dev_settings["RATE_LIMIT_RPM"] = 1
    key = "sk-env-ci-0123456789abcdef"
    assert client.get("/v1/models", **bearer(key)).status_code == 200
    assert client.get("/v1/models", **bearer(key)).status_code == 429
    assert RateLimitWindow.objects.get(bucket="env:ci").requests == 1


def test_validation_failures_count_too(client, make_key):
    _, key = make_key(requests_per_minute=1)
    bad = client.post("/v1/completions", data=json.dumps({"prompt": "x"}), content_type="application/json",
                      **bearer(key))
    assert bad.status_code == 400
    assert bad["x-ratelimit-remaining-requests"] == "0"
    again = client.post("/v1/completions", data="{}", content_type="application/json", **bearer(key))
    assert again.status_code == 429


def principal(rpm=0, tpm=0) -> Principal:
    return Principal(name="unit", bucket="unit:1", requests_per_minute=rpm, tokens_per_minute=tpm)


def test_tokens_are_reserved_then_settled():
    state = admit_request(principal(tpm=100))
    reserve_tokens(state, 60)
    assert state.headers()["x-ratelimit-remaining-tokens"] == "40"
    with pytest.raises(APIError) as exc:
        reserve_tokens(admit_request(principal(tpm=100)), 50)
    assert exc.value.status == 429 and "Retry-After" in exc.value.headers
    settle_tokens(state, 25)  # the answer used fewer tokens than max_tokens allowed
    row = RateLimitWindow.objects.get(bucket="unit:1", window=current_window())
    assert row.tokens == 25
    reserve_tokens(admit_request(principal(tpm=100)), 50)  # the refund made room


def test_a_long_request_is_settled_into_the_minute_it_ended_in():
    state = admit_request(principal(tpm=100))
    reserve_tokens(state, 60)
    admitted = state.window
    RateLimitWindow.objects.filter(bucket="unit:1", window=admitted).update(window=admitted - 2)
    state.window = admitted - 2  # as if admitted two minutes ago and still running
    settle_tokens(state, 45)
    assert RateLimitWindow.objects.get(bucket="unit:1", window=admitted - 2).tokens == 0  # reservation given back
    assert RateLimitWindow.objects.get(bucket="unit:1", window=current_window()).tokens == 45


def test_a_request_bigger_than_the_limit_is_429_at_once():
    with pytest.raises(APIError) as exc:
        reserve_tokens(admit_request(principal(tpm=10)), 11, param="max_tokens")
    assert exc.value.status == 429 and "Requested 11" in exc.value.message


def test_a_used_up_minute_refuses_at_admission():
    state = admit_request(principal(tpm=10))
    reserve_tokens(state, 10)
    with pytest.raises(APIError) as exc:
        admit_request(principal(tpm=10))
    assert exc.value.status == 429 and "tokens per min" in exc.value.message


def test_completion_views_reserve_prompt_plus_max_tokens():
    state = LimitState(principal(tpm=1000), current_window())
    admit_request(state.principal)
    request = SimpleNamespace(rate_limit=state)
    plan = SimpleNamespace(prompts=[[1, 2, 3], [4, 5]], prompt_tokens=5,
                           sampling=SimpleNamespace(max_tokens=10), samples=2)
    async_to_sync(completion.admit)(request, plan)
    assert state.reserved == 5 + 10 * 2 * 2


def test_max_prompt_tokens_cap_is_a_400_naming_it(gpt3dev_settings):
    gpt3dev_settings["MAX_PROMPT_TOKENS"] = 4
    plan = SimpleNamespace(prompts=[[1, 2, 3, 4, 5]], prompt_tokens=5,
                           sampling=SimpleNamespace(max_tokens=1), samples=1)
    with pytest.raises(APIError) as exc:
        async_to_sync(chat.admit)(SimpleNamespace(), plan)
    assert exc.value.status == 400 and exc.value.param == "messages"
    assert "at most 4" in exc.value.message and "5 tokens" in exc.value.message
