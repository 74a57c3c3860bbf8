"""End to end over HTTP with the real models: what the Usage API says equals the usage
the server returned, key by key and model by model, with two uvicorn processes writing
the ledger at once (SQLite, or the PostgreSQL named by DATABASE_URL); a key with 200
tokens a day is refused with insufficient_quota once its answers reach 200 tokens, and
works again the next day (the server's clock set by the test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest

from tests.live_server import ROOT, LiveServer
from tests.openai_schema import assert_matches_schema

pytestmark = [pytest.mark.e2e, pytest.mark.model]

CHAT, EMBED = "SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"
MESSAGES = [{"role": "user", "content": "Name a colour."}]


def manage(server: LiveServer, *args: str) -> str:
    """The last line a management command printed (`shell` prints a line of its own first)."""
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=server.env, capture_output=True,
                            text=True, timeout=120, check=True)
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


def create_key(server: LiveServer, name: str, *flags: str) -> tuple[str, str]:
    """(the key, its ledger id "db:<pk>")."""
    key = manage(server, "create_api_key", name, *flags)
    pk = manage(server, "shell", "-c", f"from access.models import APIKey; print(APIKey.objects.get(name='{name}').pk)")
    return key, f"db:{pk}"


@pytest.fixture
def two_servers(tmp_path):
    database = os.environ.get("DATABASE_URL") or f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    servers = [LiveServer(tmp_path / name, DATABASE_URL=database, PRELOAD_MODELS=f"{CHAT},{EMBED}")
               for name in ("a", "b")]
    started = []
    try:
        for server in servers:
            started.append(server.start(timeout=300))
        yield servers
    finally:
        for server in started:
            server.stop()
        # On PostgreSQL the servers share the suite's live database: keys left there would
        # close the server for every later end-to-end test.
        manage(servers[0], "shell", "-c",
               "from access.models import APIKey, RateLimitWindow; from ledger.models import UsageRow; "
               "keys = APIKey.objects.filter(name__startswith='ledger-'); "
               "ids = [f'db:{pk}' for pk in keys.values_list('pk', flat=True)]; "
               "UsageRow.objects.filter(key_id__in=ids).delete(); "
               "APIKey.objects.filter(name__startswith='ledger-').delete(); RateLimitWindow.objects.all().delete()")


def wait_loaded(server: LiveServer, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = httpx.get(f"{server.base_url}/readyz", timeout=10).json()["models"]
        if {m["id"] for m in models if m["loaded"]} >= {CHAT, EMBED}:
            return
        time.sleep(0.5)
    raise AssertionError("models not loaded")


def mix(base_url: str, key: str) -> dict:
    """One key's requests on one server; returns the usage each answer reported."""
    auth = {"Authorization": f"Bearer {key}"}
    got = {"chat_input": 0, "chat_output": 0, "chat_requests": 0, "embed_input": 0, "embed_requests": 0}
    with httpx.Client(base_url=base_url, headers=auth, timeout=300) as http:
        plain = http.post("/v1/chat/completions", json={"model": CHAT, "messages": MESSAGES, "max_tokens": 6,
                                                        "temperature": 0})
        assert plain.status_code == 200, plain.text
        usage = plain.json()["usage"]
        got["chat_input"] += usage["prompt_tokens"]
        got["chat_output"] += usage["completion_tokens"]
        got["chat_requests"] += 1
        got["prompt_tokens"] = usage["prompt_tokens"]

        with http.stream("POST", "/v1/chat/completions", json={
                "model": CHAT, "messages": MESSAGES, "max_tokens": 5, "stream": True,
                "stream_options": {"include_usage": True}}) as streamed:
            assert streamed.status_code == 200
            chunks = [json.loads(line[6:]) for line in streamed.iter_lines()
                      if line.startswith("data: ") and line != "data: [DONE]"]
        usage = chunks[-1]["usage"]
        got["chat_input"] += usage["prompt_tokens"]
        got["chat_output"] += usage["completion_tokens"]
        got["chat_requests"] += 1

        text = http.post("/v1/completions", json={"model": CHAT, "prompt": "Blue, red,", "max_tokens": 4})
        assert text.status_code == 200, text.text
        got["chat_input"] += text.json()["usage"]["prompt_tokens"]
        got["chat_output"] += text.json()["usage"]["completion_tokens"]
        got["chat_requests"] += 1

        embedded = http.post("/v1/embeddings", json={"model": EMBED, "input": ["a red house", "the sea"]})
        assert embedded.status_code == 200, embedded.text
        got["embed_input"] += embedded.json()["usage"]["prompt_tokens"]
        got["embed_requests"] += 1

        # refused: nothing used
        assert http.post("/v1/chat/completions", json={"model": CHAT, "messages": MESSAGES,
                                                        "max_tokens": -1}).status_code == 400
        assert http.post("/v1/embeddings", json={"model": "no-such-model", "input": "x"}).status_code == 404

        # cancelled: the client leaves after the first chunk of a long answer
        with http.stream("POST", "/v1/chat/completions", json={
                "model": CHAT, "messages": MESSAGES, "max_tokens": 200, "stream": True,
                "ignore_eos": True}) as cut:
            assert cut.status_code == 200
            next(line for line in cut.iter_lines() if line.startswith("data: "))
    return got


def usage_api(server: LiveServer, admin_key: str, kind: str, key_ids: list[str], since: int) -> dict:
    answer = httpx.get(f"{server.base_url}/v1/organization/usage/{kind}", timeout=30,
                       headers={"Authorization": f"Bearer {admin_key}"},
                       params={"start_time": since, "bucket_width": "1d", "group_by[]": ["api_key_id", "model"],
                               "api_key_ids[]": key_ids})
    assert answer.status_code == 200, answer.text
    page = answer.json()
    assert_matches_schema(page, "UsageResponse")
    sums: dict = {}
    for bucket in page["data"]:
        for result in bucket["results"]:
            item = sums.setdefault((result["api_key_id"], result["model"]), {"input": 0, "output": 0, "requests": 0})
            item["input"] += result["input_tokens"]
            item["output"] += result.get("output_tokens", 0)
            item["requests"] += result["num_model_requests"]
    return sums


def test_usage_api_sums_equal_the_usage_returned_with_two_workers(two_servers):
    first, second = two_servers
    since = int(time.time()) - 60
    key_a, id_a = create_key(first, f"ledger-a-{time.time_ns()}")
    key_b, id_b = create_key(first, f"ledger-b-{time.time_ns()}")
    admin_key, _ = create_key(first, f"ledger-ops-{time.time_ns()}", "--admin")
    for server in two_servers:
        wait_loaded(server)
    # both keys on both servers at once: two processes add to the same rows together
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda args: (args[1], mix(*args)),
                             [(first.base_url, key_a), (second.base_url, key_b),
                              (second.base_url, key_a), (first.base_url, key_b)]))
    returned = {id_a: [got for key, got in runs if key == key_a], id_b: [got for key, got in runs if key == key_b]}

    expected_chat = {
        key_id: {"input": sum(g["chat_input"] for g in gots), "output": sum(g["chat_output"] for g in gots),
                 "requests": sum(g["chat_requests"] for g in gots)}
        for key_id, gots in returned.items()
    }
    # each key's two cancelled streams: charged their prompt and what was written before the client left
    cancelled_prompts = {key_id: sum(g["prompt_tokens"] for g in gots) for key_id, gots in returned.items()}
    deadline = time.monotonic() + 60
    while True:  # a cancelled stream is recorded when the server notices its client left
        chat = usage_api(first, admin_key, "completions", [id_a, id_b], since)
        if all(chat.get((k, CHAT), {}).get("requests") == expected_chat[k]["requests"] + 2 for k in returned):
            break
        assert time.monotonic() < deadline, chat
        time.sleep(0.5)
    assert set(chat) == {(id_a, CHAT), (id_b, CHAT)}
    for key_id in returned:
        seen = chat[(key_id, CHAT)]
        assert seen["input"] == expected_chat[key_id]["input"] + cancelled_prompts[key_id]
        assert 0 <= seen["output"] - expected_chat[key_id]["output"] <= 2 * 200

    embed = usage_api(second, admin_key, "embeddings", [id_a, id_b], since)
    assert embed == {(key_id, EMBED): {"input": sum(g["embed_input"] for g in gots), "output": 0,
                                       "requests": len(gots)} for key_id, gots in returned.items()}

    # the ledger counted the refusals and the clients that left apart
    counted = json.loads(manage(first, "shell", "-c",
                                "import json; from django.db.models import Sum; from ledger.models import UsageRow; "
                                f"print(json.dumps(UsageRow.objects.filter(key_id__in={[id_a, id_b]!r})"
                                ".aggregate(e=Sum('errors_4xx'), c=Sum('cancelled'), x=Sum('errors_5xx'))))"))
    assert counted == {"e": 8, "c": 4, "x": 0}

    # a plain key may not read it; the official client reads it with the admin key
    refused = httpx.get(f"{first.base_url}/v1/organization/usage/completions", params={"start_time": since},
                        headers={"Authorization": f"Bearer {key_a}"}, timeout=30)
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    from openai import OpenAI

    client = OpenAI(base_url=f"{second.base_url}/v1", api_key="unused", admin_api_key=admin_key, max_retries=0)
    page = client.admin.organization.usage.completions(start_time=since, group_by=["api_key_id"],
                                                       api_key_ids=[id_a], bucket_width="1d")
    assert sum(r.input_tokens for b in page.data for r in b.results) == chat[(id_a, CHAT)]["input"]


class ClockedServer(LiveServer):
    """The live server with its quota and ledger clock read from ``clock_file``."""

    def __init__(self, workdir, **env):
        super().__init__(workdir, CLOCK_FILE=str(workdir / "clock"), **env)
        self.clock_file = workdir / "clock"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tests.ledger.clocked_server", "--port", str(self.port)]

    def set_time(self, moment: datetime) -> None:
        self.clock_file.write_text(str(moment.timestamp()))


def test_a_daily_quota_refuses_with_insufficient_quota_then_works_the_next_day(tmp_path):
    server = ClockedServer(tmp_path, PRELOAD_MODELS=CHAT, DATABASE_URL=f"sqlite:///{tmp_path / 'own.sqlite3'}")
    server.set_time(datetime(2026, 12, 3, 15, 30, tzinfo=UTC))
    server.start(timeout=300)
    try:
        key, key_id = create_key(server, "ledger-quota", "--tokens-per-day", "200")
        admin_key, _ = create_key(server, "ledger-quota-ops", "--admin")
        body = {"model": CHAT, "messages": MESSAGES, "max_tokens": 8, "temperature": 0}
        answered, last = [], None
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=300) as http:
            for _ in range(40):
                last = http.post("/v1/chat/completions", json=body)
                if last.status_code != 200:
                    break
                answered.append(last.json()["usage"]["total_tokens"])
                reserved = last.json()["usage"]["prompt_tokens"] + 8
                # the header counts this answer's reservation (its settlement comes after the answer)
                assert int(last.headers["x-ratelimit-remaining-tokens-day"]) == 200 - (sum(answered[:-1]) + reserved)
            assert last.status_code == 429, last.text
            error = last.json()["error"]
            assert error["type"] == "insufficient_quota" and error["code"] == "insufficient_quota"
            assert "resets at 2026-12-04 00:00 UTC (in 8h30m0s)" in error["message"]
            assert last.headers["x-should-retry"] == "false"
            used = sum(answered)
            assert used <= 200 < used + reserved  # refused once the next reservation no longer fits
            assert len(answered) >= 3

            server.set_time(datetime(2026, 12, 4, 0, 0, 5, tzinfo=UTC))  # the next UTC day
            again = http.post("/v1/chat/completions", json=body)
            assert again.status_code == 200, again.text
            assert again.headers["x-ratelimit-reset-tokens-day"] == "23h59m55s"
        # the ledger kept each day's usage in its own day
        page = httpx.get(f"{server.base_url}/v1/organization/usage/completions", timeout=30,
                         headers={"Authorization": f"Bearer {admin_key}"},
                         params={"start_time": int(datetime(2026, 12, 3, tzinfo=UTC).timestamp()), "limit": 2,
                                 "api_key_ids": key_id}).json()
        assert [sum(r["input_tokens"] + r["output_tokens"] for r in b["results"]) for b in page["data"]] == [
            used, again.json()["usage"]["total_tokens"]]
    finally:
        server.stop()
