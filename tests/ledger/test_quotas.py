"""Token quotas per key and UTC day / month: refused at admission once used up,
reserved like tokens per minute, settled to real usage in the period the answer ended
in, a 429 ``insufficient_quota`` saying when the quota resets, and headers saying what
is left. The clock is access.quotas.now, set by the tests."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command

from access import quotas
from access.keys import Principal, create_api_key
from access.models import APIKey, RateLimitWindow
from core.errors import APIError

pytestmark = pytest.mark.django_db

NOON = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
def quota_clock(monkeypatch):
    class Clock:
        now = NOON

    frozen = Clock()
    monkeypatch.setattr(quotas, "now", lambda: frozen.now)
    return frozen


def principal(day=0, month=0) -> Principal:
    return Principal(name="quota", bucket="db:99", tokens_per_day=day, tokens_per_month=month)


def test_reserve_settle_refuse_and_the_next_day(quota_clock):
    state = quotas.admit(principal(day=200))
    quotas.reserve(state, 150)  # prompt + max_tokens
    quotas.settle(state, 120)  # what the answer used
    assert state.headers()["x-ratelimit-remaining-tokens-day"] == "80"
    state = quotas.admit(principal(day=200))
    with pytest.raises(APIError) as refused:
        quotas.reserve(state, 81, param="max_tokens")  # more than is left
    error = refused.value
    assert (error.status, error.type, error.code, error.param) == (429, "insufficient_quota", "insufficient_quota",
                                                                    "max_tokens")
    assert "daily token quota of key 'quota': Limit 200, Used 120, Requested 81" in error.message
    assert "resets at 2026-12-04 00:00 UTC (in 12h0m0s)" in error.message
    assert error.headers["x-should-retry"] == "false"
    quotas.settle(state, 0)  # the refused request used nothing
    quotas.reserve(quotas.admit(principal(day=200)), 80)  # exactly what is left fits
    with pytest.raises(APIError) as used_up:
        quotas.admit(principal(day=200))  # nothing left: refused at admission
    assert "Used 200" in used_up.value.message
    quota_clock.now = NOON + timedelta(hours=12, seconds=1)  # the next UTC day
    state = quotas.admit(principal(day=200))
    assert state.headers()["x-ratelimit-remaining-tokens-day"] == "200"
    assert state.headers()["x-ratelimit-reset-tokens-day"] == "23h59m59s"


def test_an_answer_that_ends_the_next_day_is_charged_there(quota_clock):
    quota_clock.now = NOON + timedelta(hours=11, minutes=59)
    state = quotas.admit(principal(day=500))
    quotas.reserve(state, 300)
    quota_clock.now = NOON + timedelta(hours=12, minutes=1)  # the stream ended after midnight
    quotas.settle(state, 100)
    rows = dict(RateLimitWindow.objects.filter(bucket="day:db:99").values_list("window", "tokens"))
    today = quotas.period_of("day", NOON)[0]
    assert rows == {today: 0, today + 1: 100}


def test_month_quota_and_its_reset(quota_clock):
    state = quotas.admit(principal(month=1000))
    quotas.reserve(state, 1000)
    with pytest.raises(APIError) as refused:
        quotas.admit(principal(month=1000))
    assert "monthly token quota" in refused.value.message
    assert "resets at 2027-01-01 00:00 UTC" in refused.value.message
    quota_clock.now = datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert quotas.admit(principal(month=1000)).headers()["x-ratelimit-remaining-tokens-month"] == "1000"


def test_headers_and_the_refusal_over_http(client, quota_clock):
    row, key = create_api_key(name="dana", tokens_per_day=200, tokens_per_month=5000)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    answer = client.get("/v1/models", **auth)
    assert answer.status_code == 200
    assert answer["x-ratelimit-limit-tokens-day"] == "200"
    assert answer["x-ratelimit-remaining-tokens-day"] == "200"
    assert answer["x-ratelimit-reset-tokens-day"] == "12h0m0s"
    assert answer["x-ratelimit-limit-tokens-month"] == "5000"
    day = quotas.period_of("day", NOON)[0]
    RateLimitWindow.objects.create(bucket=f"day:db:{row.pk}", window=day, tokens=200)  # as if used today
    refused = client.get("/v1/models", **auth)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "insufficient_quota"
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert refused["x-ratelimit-remaining-tokens-day"] == "0"
    _, other = create_api_key(name="erin")  # no quota: no quota headers
    assert "x-ratelimit-limit-tokens-day" not in client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {other}")


def test_create_api_key_flags():
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", "ops", "--admin", "--tokens-per-day", "200", "--tokens-per-month", "6000",
                 stdout=out, stderr=err)
    row = APIKey.objects.get(name="ops")
    assert (row.admin, row.tokens_per_day, row.tokens_per_month) == (True, 200, 6000)
    call_command("create_api_key", "plain", stdout=out, stderr=err)
    plain = APIKey.objects.get(name="plain")
    assert (plain.admin, plain.tokens_per_day, plain.tokens_per_month) == (False, None, None)
    with pytest.raises(CommandError, match="--tokens-per-day must be at least 1"):
        call_command("create_api_key", "zero", "--tokens-per-day", "0", stdout=out, stderr=err)
