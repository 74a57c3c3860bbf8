"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, a live uvicorn
server that serves collected static files as `make run` does, and screenshots saved as
test artefacts under test-artifacts/playground/ (git-ignored)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live_server import ROOT, LiveServer

ARTIFACTS = Path(os.environ.get("PLAYGROUND_ARTIFACTS", ROOT / "test-artifacts" / "playground"))
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")
TIMEOUT_MS = 240_000  # a loaded 2-core machine decodes a few tokens per second


def chromium_path() -> str | None:
    explicit = os.environ.get("CHROMIUM_PATH")
    if explicit:
        return explicit
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


# Module scope: Playwright's sync API keeps an event loop running in the main thread while
# it is open, which would break later tests that call async_to_sync or asyncio.run().
@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is not installed: `apt-get install -y chromium` (Debian), "
                    "or set CHROMIUM_PATH to a Chromium binary; .ci/run installs it")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="`make test` installs playwright (requirements-dev.txt)")
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def playground_server(tmp_path_factory) -> Iterator[LiveServer]:
    """The default models on a fresh server with its own SQLite database (a shared
    DATABASE_URL may hold other tests' API keys); static files gathered by collectstatic."""
    workdir = tmp_path_factory.mktemp("playground")
    server = LiveServer(workdir, collect_static=True, DATABASE_URL=f"sqlite:///{workdir / 'own.sqlite3'}").start()
    yield server
    server.stop()


@pytest.fixture
def open_page(browser):
    """Opens a page in a fresh browser context (its own sessionStorage); fails the test
    on any console error (Content-Security-Policy refusals included), script error or
    failed request other than the 401s a missing or wrong key gets."""
    contexts = []
    problems: list[str] = []

    def opener(url: str):
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("console",
                lambda m: problems.append(m.text) if m.type == "error" and not _logged_fetch(m.text) else None)
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("response",
                lambda r: problems.append(f"{r.status} {r.url}") if not _expected(r.status, r.url) else None)
        page.goto(url)
        return page

    yield opener
    for context in contexts:
        context.close()
    assert problems == []


def _logged_fetch(text: str) -> bool:
    # Chromium logs every non-2xx answer; the response handler judges those.
    return text.startswith("Failed to load resource: the server responded with a status of")


def _expected(status: int, url: str) -> bool:
    # 401: the key tests provoke them on purpose; the admin's pages have no favicon.
    return status < 400 or status == 401 or url.endswith("/favicon.ico")


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def models_loaded(page) -> None:
    page.wait_for_selector("body[data-models-loaded=true]")
