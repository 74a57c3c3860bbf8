"""The ledger's rows: one per (hour, key, model, endpoint), added to by each request,
errors counted apart, API routes only, bounded by construction, purged after
USAGE_RETENTION_DAYS."""

from __future__ import annotations

import io
import random

import pytest
from django.core.management import call_command
from django.db.models import Sum

from core.usage import CLIENT_CLOSED_REQUEST
from ledger import recorder
from ledger.models import UsageRow
from tests.ledger.conftest import HOUR, START, usage

pytestmark = pytest.mark.django_db


def test_requests_of_one_hour_key_model_and_endpoint_share_one_row(clock):
    recorder.record(usage(input_tokens=10, cached_tokens=4, output_tokens=5))
    clock.now += 3599 - (clock.now % HOUR)  # the hour's last second
    recorder.record(usage(input_tokens=7, output_tokens=3))
    row = UsageRow.objects.get()
    assert (row.hour, row.key_id, row.key_name, row.model, row.endpoint) == (
        START, "db:1", "alice", "SmolLM2-135M-Instruct", "chat-completions")
    assert (row.requests, row.input_tokens, row.cached_tokens, row.output_tokens) == (2, 17, 4, 8)
    clock.now += 1  # the next hour: a new row
    recorder.record(usage())
    assert UsageRow.objects.count() == 2
    assert UsageRow.objects.filter(hour=START + HOUR).get().requests == 1


def test_errors_are_counted_apart_and_only_used_tokens_are_charged(clock):
    for status in (200, 400, 404, 429, 500, 503, CLIENT_CLOSED_REQUEST):
        recorder.record(usage(status=status, input_tokens=10, output_tokens=2))
    recorder.record(usage(status=400, input_tokens=None, output_tokens=0))  # refused before reading anything
    row = UsageRow.objects.get()
    assert row.requests == 8
    assert (row.errors_4xx, row.errors_5xx, row.cancelled) == (4, 2, 1)
    # the answered request and the one whose client left (it read its prompt, wrote 2 tokens)
    assert (row.input_tokens, row.output_tokens) == (20, 4)


def test_only_api_routes_are_recorded(clock):
    for path in ("/admin/", "/healthz", "/metrics", "/playground/", "/static/x.js"):
        recorder.record(usage(path=path, endpoint="unmatched", model=None, key_id=None))
    assert not UsageRow.objects.exists()
    for path in ("/v1/models", "/tokenize", "/v2/rerank"):
        recorder.record(usage(path=path, endpoint="x"))
    assert UsageRow.objects.count() == 1 and UsageRow.objects.get().requests == 3


def test_an_open_server_records_under_the_anonymous_key(clock):
    recorder.record(usage(key_id=None, key_name=None))
    recorder.record(usage(key_id=None, key_name=None, model=None, status=400, input_tokens=None))
    rows = UsageRow.objects.order_by("model")
    assert [(r.key_id, r.key_name, r.model, r.requests) for r in rows] == [
        ("anonymous", "", "", 1), ("anonymous", "", "SmolLM2-135M-Instruct", 1)]


def test_a_renamed_key_keeps_its_row_and_shows_its_new_name(clock):
    recorder.record(usage(key_name="alice"))
    recorder.record(usage(key_name="alice-laptop"))
    row = UsageRow.objects.get()
    assert (row.key_name, row.requests) == ("alice-laptop", 2)


def test_ten_thousand_requests_make_at_most_keys_x_models_x_hours_x_endpoints_rows(clock):
    keys, models = ["db:1", "db:2", "env:ci"], ["SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"]
    endpoints = ["chat-completions", "embeddings"]
    rng = random.Random(7)
    expected_tokens = 0
    for n in range(10_000):
        clock.now = START + n * 1.26  # 10,000 requests over 3.5 hours
        input_tokens = rng.randint(1, 50)
        expected_tokens += input_tokens
        recorder.record(usage(key_id=rng.choice(keys), model=rng.choice(models), endpoint=rng.choice(endpoints),
                              input_tokens=input_tokens, output_tokens=0))
    hours = int(clock.now // HOUR) - START // HOUR + 1
    assert hours == 4
    assert UsageRow.objects.count() <= len(keys) * len(models) * hours * len(endpoints)  # 48
    sums = UsageRow.objects.aggregate(requests=Sum("requests"), tokens=Sum("input_tokens"))
    assert sums == {"requests": 10_000, "tokens": expected_tokens}


def test_rows_older_than_the_retention_are_purged(clock, gpt3dev_settings):
    gpt3dev_settings["USAGE_RETENTION_DAYS"] = 2
    recorder.record(usage())
    clock.now += 2 * 86400 - HOUR  # still within two days: nothing purged
    recorder.record(usage())
    assert UsageRow.objects.count() == 2
    clock.now += 2 * HOUR  # the first row is now older than two days: the next hour's first request purges it
    recorder.record(usage())
    assert sorted(UsageRow.objects.values_list("hour", flat=True)) == [START + 2 * 86400 - HOUR,
                                                                      START + 2 * 86400 + HOUR]


def test_purge_usage_command(clock, gpt3dev_settings):
    import time

    now = int(time.time()) // HOUR * HOUR
    for age_days in (1, 10, 500):
        recorder.add(now - age_days * 86400, "db:1", "alice", "m", "completions", recorder.counts(usage()))
    out = io.StringIO()
    call_command("purge_usage", stdout=out)  # USAGE_RETENTION_DAYS: 400 by default
    assert "Deleted 1 usage row(s) older than 400 day(s)." in out.getvalue()
    call_command("purge_usage", "--days", "5", stdout=out)
    assert list(UsageRow.objects.values_list("hour", flat=True)) == [now - 86400]


def test_batched_sums_are_written_in_one_flush(clock, gpt3dev_settings, monkeypatch):
    gpt3dev_settings["USAGE_FLUSH_SECONDS"] = 1
    started = []
    monkeypatch.setattr(recorder, "_start_flusher", started.append)  # the test flushes, not a thread
    for tokens in (10, 20, 30):
        recorder.record(usage(input_tokens=tokens, output_tokens=1))
    recorder.record(usage(key_id="db:2", key_name="bob", status=429))
    assert started == [1, 1, 1, 1]
    assert not UsageRow.objects.exists()  # nothing written yet: the request paid for no commit
    recorder.flush()
    rows = {row.key_id: row for row in UsageRow.objects.all()}
    assert (rows["db:1"].requests, rows["db:1"].input_tokens, rows["db:1"].output_tokens) == (3, 60, 3)
    assert (rows["db:2"].requests, rows["db:2"].errors_4xx, rows["db:2"].key_name) == (1, 1, "bob")
    recorder.flush()  # nothing pending: nothing added
    assert UsageRow.objects.get(key_id="db:1").requests == 3


def test_a_failed_flush_keeps_the_sums_for_the_next(clock, gpt3dev_settings, monkeypatch):
    gpt3dev_settings["USAGE_FLUSH_SECONDS"] = 1
    monkeypatch.setattr(recorder, "_start_flusher", lambda interval: None)
    recorder.record(usage(input_tokens=5))
    real_add = recorder.add

    def broken(*args):
        raise RuntimeError("the database is away")

    monkeypatch.setattr(recorder, "add", broken)
    with pytest.raises(RuntimeError):
        recorder.flush()
    recorder.record(usage(input_tokens=7))
    monkeypatch.setattr(recorder, "add", real_add)
    recorder.flush()
    row = UsageRow.objects.get()
    assert (row.requests, row.input_tokens) == (2, 12)
