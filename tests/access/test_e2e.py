"""Two real uvicorn processes on one database share a key's limit; keys made by the
management command work in both at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.live_server import ROOT, LiveServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def two_servers(tmp_path):
    database = os.environ.get("DATABASE_URL") or f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = LiveServer(tmp_path / "a", DATABASE_URL=database)
    second = LiveServer(tmp_path / "b", DATABASE_URL=database)
    first.start()
    try:
        second.start()
    except Exception:
        first.stop()
        raise
    yield first, second
    first.stop()
    second.stop()
    # On PostgreSQL the servers share the suite's live database: a key left there would
    # close the server for every later end-to-end test.
    subprocess.run([sys.executable, "manage.py", "shell", "-c",
                    "from access.models import APIKey, RateLimitWindow; "
                    "APIKey.objects.filter(name__startswith='team-').delete(); RateLimitWindow.objects.all().delete()"],
                   cwd=ROOT, env=first.env, capture_output=True, timeout=60, check=True)


def create_key(server: LiveServer, name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, "manage.py", "create_api_key", name, *args], cwd=ROOT, env=server.env,
                            capture_output=True, text=True, timeout=60, check=True)
    assert "will not be shown again" in result.stderr
    return result.stdout.strip()


def test_rate_limit_is_shared_by_two_processes(two_servers):
    first, second = two_servers
    key = create_key(first, f"team-{time.time_ns()}", "--rpm", "3")
    if time.time() % 60 > 50:  # the four requests must fall in one fixed minute
        time.sleep(60 - time.time() % 60 + 0.1)
    auth = {"Authorization": f"Bearer {key}"}
    answers = [httpx.get(f"{server.base_url}/v1/models", headers=auth, timeout=10)
               for server in (first, second, first, second, first)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0", "0", "0"]
    assert all(a.headers["x-ratelimit-limit-requests"] == "3" for a in answers)
    assert int(answers[3].headers["retry-after"]) >= 1
    assert answers[3].json()["error"]["type"] == "rate_limit_error"
    # and the key is checked in both: no key, no answer
    assert httpx.get(f"{second.base_url}/v1/models", timeout=10).status_code == 401
