"""The admin: the usage page (30 days by key and by model: charts' data and tables),
and on each key's page its usage this day and month against its quotas."""

from __future__ import annotations

import json
import re
import time

import pytest

from access.keys import create_api_key
from ledger import recorder
from tests.ledger.conftest import usage

pytestmark = pytest.mark.django_db

DAY = 86400


def test_the_usage_page_sums_30_days_by_key_and_by_model(admin_client_logged_in, clock):
    today = int(clock.now // DAY) * DAY
    clock.now = today - 40 * DAY  # older than 30 days: not shown
    recorder.record(usage(key_id="db:1", key_name="alice", input_tokens=1000, output_tokens=0))
    for back, key, model, tokens in ((0, "db:1", "m-chat", 30), (0, "db:2", "m-embed", 12), (3, "db:1", "m-chat", 7),
                                     (29, "db:2", "m-chat", 5)):
        clock.now = today - back * DAY + 7200
        recorder.record(usage(key_id=key, key_name={"db:1": "alice", "db:2": "bob"}[key], model=model,
                              input_tokens=tokens, output_tokens=1))
    clock.now = today + 7200
    recorder.record(usage(key_id="db:2", key_name="bob", model="m-chat", status=500))
    page = admin_client_logged_in.get("/admin/ledger/usagerow/")
    assert page.status_code == 200
    html = page.content.decode()
    data = json.loads(re.search(r'<script id="ledger-usage-data" type="application/json">(.*?)</script>', html,
                                re.S).group(1))
    assert len(data["days"]) == 30 and data["days"][-1] == time.strftime("%Y-%m-%d", time.gmtime(today))
    by_key = {s["label"]: s for s in data["by_key"]}
    assert by_key["alice"]["tokens"][-1] == 31 and by_key["alice"]["tokens"][-4] == 8
    assert sum(by_key["alice"]["tokens"]) == 39  # the row of 40 days ago is left out
    assert by_key["bob"]["tokens"][0] == 6 and by_key["bob"]["requests"][-1] == 2
    by_model = {s["label"]: s for s in data["by_model"]}
    assert sum(by_model["m-chat"]["tokens"]) == 31 + 8 + 6 and sum(by_model["m-embed"]["tokens"]) == 13
    assert 'src="/static/ledger/usage-chart.js"' in html
    # the tables: bob's row has its 5xx; the per-day table has 30 rows
    bob = re.search(r'<th scope="row" title="db:2">bob</th>(.*?)</tr>', html, re.S).group(1)
    assert re.findall(r'<td class="num">(\d+)</td>', bob) == ["3", "17", "0", "2", "19", "0", "1", "0"]
    assert html.count("<tr><td>20") == 30


def test_the_usage_page_needs_a_staff_login(client, db):
    answer = client.get("/admin/ledger/usagerow/")
    assert answer.status_code == 302 and "/admin/login/" in answer["Location"]


def test_a_keys_page_shows_its_usage_against_its_quotas(admin_client_logged_in):
    row, key = create_api_key(name="dana", tokens_per_day=500)
    now = time.time()
    recorder.add(int(now // 3600) * 3600, f"db:{row.pk}", "dana", "m", "chat-completions",
                 recorder.counts(usage(input_tokens=40, output_tokens=2)))
    admin_client_logged_in.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {key}")
    html = admin_client_logged_in.get(f"/admin/access/apikey/{row.pk}/change/").content.decode()
    table = re.search(r'<table class="key-usage">.*?</table>', html, re.S).group(0)
    today = re.search(r"<tr><td>Today \(UTC\)</td>(.*?)</tr>", table).group(1)
    assert re.findall(r"<td>([^<]*)</td>", today)[:4] == ["42", "2", "40", "2"]  # the /v1/models request too
    assert "of its 500-token quota counted" in today
    assert "no quota" in re.search(r"<tr><td>This month \(UTC\)</td>(.*?)</tr>", table).group(1)


def test_the_admin_box_and_quota_fields(admin_client_logged_in):
    fields = {"name": "ops", "admin": "on", "tokens_per_day": "1000", "tokens_per_month": "", "allowed_models": "",
              "requests_per_minute": "", "tokens_per_minute": "", "expires_at_0": "", "expires_at_1": ""}
    assert admin_client_logged_in.post("/admin/access/apikey/add/", fields).status_code == 302
    from access.models import APIKey

    row = APIKey.objects.get(name="ops")
    assert (row.admin, row.tokens_per_day, row.tokens_per_month) == (True, 1000, None)
    refused = admin_client_logged_in.post("/admin/access/apikey/add/",
                                          {**fields, "name": "zero", "tokens_per_day": "0"})
    assert refused.status_code == 200 and "greater than or equal to 1" in refused.content.decode()
