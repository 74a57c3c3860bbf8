"""The admin usage page in a real headless Chromium (Debian's, through Playwright): the
charts are drawn from local static files only, switch between tokens and requests, and
the page is saved as test-artifacts/ledger/usage-admin.png (copy it over
docs/usage-admin.png to refresh the docs' picture; the suite never writes the docs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.live_server import ROOT, LiveServer
from tests.playground.conftest import browser  # noqa: F401 - the shared Chromium fixture

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SCREENSHOT = ROOT / "test-artifacts" / "ledger" / "usage-admin.png"
PASSWORD = "a-long-password-1"

# 30 days of a small team's usage, written through the ledger's own upsert: three keys,
# two models, three endpoints (the sums the page must show are computed from the same plan).
SEED = f"""
import time
from django.contrib.auth import get_user_model
from ledger import recorder
from core.usage import Usage
get_user_model().objects.create_superuser("admin", "admin@example.com", "{PASSWORD}")
today = int(time.time() // 86400) * 86400
plan = [("db:1", "alice", "SmolLM2-135M-Instruct", "chat-completions", 900, 300),
        ("db:2", "build-bot", "SmolLM2-135M-Instruct", "completions", 400, 120),
        ("db:2", "build-bot", "all-MiniLM-L6-v2", "embeddings", 600, 0),
        ("db:3", "bob", "SmolLM2-135M-Instruct", "chat-completions", 250, 90)]
for back in range(30):
    for n, (key_id, name, model, endpoint, inp, out) in enumerate(plan):
        weight = 1 + (back * 7 + n * 3) % 5
        if (back + n) % 6 == 0:
            continue
        used = Usage(endpoint=endpoint, model=model, key_id=key_id, key_name=name, status=200, path="/v1/x",
                     input_tokens=inp * weight // 3, output_tokens=out * weight // 3)
        recorder.add(today - back * 86400 + 3600 * (n + 1), key_id, name, model, endpoint, recorder.counts(used))
"""


@pytest.fixture(scope="module")
def usage_server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ledger-admin")
    server = LiveServer(workdir, collect_static=True, DATABASE_URL=f"sqlite:///{workdir / 'own.sqlite3'}").start()
    subprocess.run([sys.executable, "manage.py", "shell", "-c", SEED], cwd=ROOT, env=server.env, check=True,
                   capture_output=True, timeout=120)
    yield server
    server.stop()


def test_the_usage_page_draws_its_charts(browser, usage_server):  # noqa: F811 - the imported fixture
    context = browser.new_context(viewport={"width": 1280, "height": 1180})
    problems: list[str] = []
    page = context.new_page()
    # Chromium logs every non-2xx answer as a console error: the response handler judges those.
    page.on("console", lambda m: problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
    remote: list[str] = []
    page.on("request", lambda r: remote.append(r.url) if not r.url.startswith(usage_server.base_url) else None)
    try:
        page.goto(f"{usage_server.base_url}/admin/login/?next=/admin/ledger/usagerow/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_selector("#chart-by-key svg rect")
        # by key: 3 keys; by model: 2 models; a bar segment per key and day that had usage
        assert page.locator("#chart-by-key .ledger-legend li").count() == 3
        assert page.locator("#chart-by-model .ledger-legend li").count() == 2
        segments = page.locator("#chart-by-key rect").count()
        assert segments == sum(1 for back in range(30) for n in range(4) if (back + n) % 6) - _merged_days()
        legend = page.locator("#chart-by-key .ledger-legend").inner_text()
        assert "alice" in legend and "build-bot" in legend and "tokens" in legend
        page.click("button[data-metric=requests]")
        assert page.locator("button[data-metric=requests]").get_attribute("aria-pressed") == "true"
        assert "requests" in page.locator("#chart-by-model .ledger-legend").inner_text()
        page.click("button[data-metric=tokens]")
        assert page.locator("#table-per-day tbody tr").count() == 30
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))  # the charts and the tables by key and by model
        assert Path(SCREENSHOT).stat().st_size > 10_000
    finally:
        context.close()
    assert problems == []
    assert remote == []  # nothing from a CDN or any other host


def _merged_days() -> int:
    """build-bot's two rows (completions and embeddings) are one key: one segment a day
    when both were used."""
    return sum(1 for back in range(30) if (back + 1) % 6 and (back + 2) % 6)
