"""GET /v1/organization/usage/completions and /embeddings: OpenAI's shape (validated
against the vendored spec), buckets, group_by, filters and pages over the ledger; admin
keys only (an open server answers everyone); a bad parameter is a 400 naming it."""

from __future__ import annotations

import pytest

from access.keys import create_api_key
from ledger import recorder
from tests.ledger.conftest import HOUR, START, usage
from tests.openai_schema import assert_matches_schema

pytestmark = pytest.mark.django_db

DAY = 86400
CHAT, EMBED = "SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"


@pytest.fixture
def ledger_rows(clock):
    """Two keys, two models, three hours over two UTC days."""
    day = START - START % DAY
    plan = [  # (unix time, key, endpoint, model, input, cached, output, status)
        (day + 1 * HOUR + 5, "db:1", "chat-completions", CHAT, 10, 4, 5, 200),
        (day + 1 * HOUR + 9, "db:1", "completions", CHAT, 3, 0, 2, 200),
        (day + 1 * HOUR + 20, "db:2", "chat-completions", CHAT, 7, 0, 1, 499),
        (day + 1 * HOUR + 30, "db:2", "chat-completions", CHAT, 50, 0, 0, 429),  # refused: no tokens
        (day + 2 * HOUR + 1, "db:2", "responses", CHAT, 20, 0, 6, 200),
        (day + 2 * HOUR + 2, "db:1", "embeddings", EMBED, 8, 0, 0, 200),
        (day + DAY + 3 * HOUR, "db:2", "embeddings", EMBED, 12, 0, 0, 200),
        (day + DAY + 3 * HOUR + 1, "db:2", "rerank", EMBED, 40, 0, 0, 200),  # not in either Usage API
    ]
    for at, key, endpoint, model, inp, cached, out, status in plan:
        clock.now = at
        recorder.record(usage(key_id=key, key_name=key, endpoint=endpoint, model=model, input_tokens=inp,
                              cached_tokens=cached, output_tokens=out, status=status))
    clock.now = day + 2 * DAY
    return day


def get(client, path, key=None, **params):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    return client.get(f"/v1/organization/usage/{path}", params, **headers)


def test_an_open_server_answers_in_openai_shape(client, ledger_rows):
    day = ledger_rows
    answer = get(client, "completions", start_time=day, end_time=day + 2 * DAY)
    assert answer.status_code == 200, answer.content
    page = answer.json()
    assert_matches_schema(page, "UsageResponse")
    assert page["has_more"] is False and page["next_page"] is None
    assert [(b["start_time"], b["end_time"]) for b in page["data"]] == [(day, day + DAY), (day + DAY, day + 2 * DAY)]
    first, second = page["data"]
    assert second["results"] == []
    [total] = first["results"]
    assert total["object"] == "organization.usage.completions.result"
    # the 429 counts as no model request and no tokens; the 499 is charged what it used
    assert (total["input_tokens"], total["input_cached_tokens"], total["output_tokens"],
            total["num_model_requests"]) == (10 + 3 + 7 + 20, 4, 5 + 2 + 1 + 6, 4)
    assert total["api_key_id"] is None and total["model"] is None

    embeddings = get(client, "embeddings", start_time=day, end_time=day + 2 * DAY).json()
    assert_matches_schema(embeddings, "UsageResponse")
    assert [[(r["object"], r["input_tokens"], r["num_model_requests"]) for r in b["results"]]
            for b in embeddings["data"]] == [[("organization.usage.embeddings.result", 8, 1)],
                                              [("organization.usage.embeddings.result", 12, 1)]]


def test_hour_buckets_group_by_and_filters(client, ledger_rows):
    day = ledger_rows
    page = get(client, "completions", start_time=day, end_time=day + 3 * HOUR, bucket_width="1h",
               **{"group_by[]": ["api_key_id", "model"]}).json()
    assert_matches_schema(page, "UsageResponse")
    assert [b["start_time"] for b in page["data"]] == [day, day + HOUR, day + 2 * HOUR]
    assert page["data"][0]["results"] == []
    assert [(r["api_key_id"], r["model"], r["input_tokens"], r["output_tokens"], r["num_model_requests"])
            for r in page["data"][1]["results"]] == [("db:1", CHAT, 13, 7, 2), ("db:2", CHAT, 7, 1, 1)]
    assert [(r["api_key_id"], r["input_tokens"]) for r in page["data"][2]["results"]] == [("db:2", 20)]
    only = get(client, "completions", start_time=day, end_time=day + 3 * HOUR, bucket_width="1h",
               group_by="api_key_id", api_key_ids="db:2").json()
    assert [[r["api_key_id"] for r in b["results"]] for b in only["data"]] == [[], ["db:2"], ["db:2"]]
    assert get(client, "embeddings", start_time=day, end_time=day + 2 * DAY, models=CHAT).json()["data"][0][
        "results"] == []


def test_pages_of_buckets(client, ledger_rows):
    day = ledger_rows
    seen, params = [], {"start_time": day, "end_time": day + 2 * DAY, "bucket_width": "1h", "limit": 20}
    page = get(client, "completions", **params).json()
    while True:
        seen += [b["start_time"] for b in page["data"]]
        if not page["has_more"]:
            break
        page = get(client, "completions", page=page["next_page"], **params).json()
    assert seen == list(range(day, day + 2 * DAY, HOUR))
    assert get(client, "completions", start_time=day, bucket_width="1d", limit=7).json()["data"][-1][
        "start_time"] == day + 2 * DAY  # no end_time: up to now (the ledger's clock)


@pytest.mark.parametrize(("params", "param"), [
    ({}, "start_time"),
    ({"start_time": "yesterday"}, "start_time"),
    ({"start_time": 100, "end_time": 50}, "end_time"),
    ({"start_time": 0, "bucket_width": "1m"}, "bucket_width"),
    ({"start_time": 0, "bucket_width": "1w"}, "bucket_width"),
    ({"start_time": 0, "bucket_width": "1h", "limit": 169}, "limit"),
    ({"start_time": 0, "limit": 0}, "limit"),
    ({"start_time": 0, "group_by": "project_id"}, "group_by"),
    ({"start_time": 0, "group_by": "colour"}, "group_by"),
    ({"start_time": 0, "project_ids": "proj_1"}, "project_ids"),
    ({"start_time": 0, "page": "page_12"}, "page"),
    ({"start_time": 0, "batch": "maybe"}, "batch"),
])
def test_bad_parameters_are_400s_naming_them(client, db, params, param):
    answer = get(client, "completions", **params)
    assert answer.status_code == 400, answer.content
    error = answer.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert f"'{param}'" in error["message"]


def test_1m_buckets_are_refused_because_minutes_are_not_kept(client, db):
    error = get(client, "completions", start_time=0, bucket_width="1m").json()["error"]
    assert error["message"].startswith("Invalid value for 'bucket_width': '1m' is not available")


def test_only_admin_keys_read_usage(client, ledger_rows):
    day = ledger_rows
    _, admin_key = create_api_key(name="ops", admin=True)
    _, plain_key = create_api_key(name="alice")
    refused = get(client, "completions", plain_key, start_time=day)
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "permission_error"
    assert "only admin keys" in refused.json()["error"]["message"]
    assert get(client, "embeddings", plain_key, start_time=day).status_code == 403
    assert get(client, "completions", start_time=day).status_code == 401  # no key on a keyed server
    answer = get(client, "completions", admin_key, start_time=day, end_time=day + DAY)
    assert answer.status_code == 200
    assert answer.json()["data"][0]["results"][0]["input_tokens"] == 40


def test_an_admin_key_from_api_keys(client, ledger_rows, gpt3dev_settings):
    gpt3dev_settings["API_KEYS"] = ["ops:sk-ops-0123456789abcdef", "ci:sk-ci-0123456789abcdef"]
    gpt3dev_settings["ADMIN_KEY_NAMES"] = ["ops"]
    assert get(client, "completions", "sk-ops-0123456789abcdef", start_time=0).status_code == 200
    assert get(client, "completions", "sk-ci-0123456789abcdef", start_time=0).status_code == 403
