"""Per-model sampling defaults over real HTTP with the real SmolLM2: the SDK sending no
sampling fields gets the row's card defaults (and so a sensible answer), the defaults are
visible on /v1/models/{id} and in the start-up log, and an edit in the admin changes the
next answer with no restart."""

from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser

import httpx
import pytest
from openai import OpenAI

from tests.live_server import ROOT, LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_the_sdk_without_sampling_fields_gets_the_card_defaults(openai_client, live_server_url):
    detail = httpx.get(f"{live_server_url}/v1/models/{MODEL}", timeout=30).json()
    assert detail["sampling_defaults"] == {"temperature": 0.2, "top_p": 0.9}
    answers = [
        openai_client.chat.completions.create(model=MODEL, messages=QUESTION, seed=seed, max_tokens=40)
        .choices[0].message.content
        for seed in range(10)
    ]
    assert sum("Paris" in answer for answer in answers) >= 8, answers
    # A request's own field still wins: temperature 0 is greedy, whatever the row says.
    greedy = {openai_client.chat.completions.create(model=MODEL, messages=QUESTION, seed=seed, temperature=0,
                                                    max_tokens=12).choices[0].message.content for seed in (1, 2)}
    assert len(greedy) == 1


class _AdminForm(HTMLParser):
    """The fields of the admin's change form, as a browser would post them."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "button", "file"):
            if a.get("type") == "checkbox":
                if "checked" in a:
                    self.fields[name] = "on"
            elif a.get("type") != "password":
                self.fields[name] = a.get("value") or ""
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select and "selected" in a:
            self.fields[self._select] = a.get("value") or ""
        elif tag == "textarea" and name:
            self._textarea = name
            self.fields[name] = ""

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.fields[self._textarea] += data


@pytest.fixture(scope="module")
def own_server(tmp_path_factory):
    """A server of its own (its registry is edited here), logging at info, with SmolLM2
    preloaded and an admin account."""
    workdir = tmp_path_factory.mktemp("sampling")
    server = LiveServer(workdir, LOG_LEVEL="info", PRELOAD_MODELS=MODEL,
                        DATABASE_URL=f"sqlite:///{workdir / 'own.sqlite3'}")
    server.migrate()
    env = {**server.env, "DJANGO_SUPERUSER_PASSWORD": "a-long-password-1"}
    subprocess.run([sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", "admin",
                    "--email", "admin@example.com"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
    server.launch()
    server.wait_healthy()
    yield server
    server.stop()


def _edit_in_admin(base: str, **changes: str) -> None:
    with httpx.Client(base_url=base, timeout=60, follow_redirects=False) as browser:
        browser.get("/admin/login/")
        login = browser.post("/admin/login/?next=/admin/", data={
            "username": "admin", "password": "a-long-password-1", "csrfmiddlewaretoken": browser.cookies["csrftoken"],
        })
        assert login.status_code == 302, login.text[-2000:]
        found = browser.get("/admin/models_api/modelentry/", params={"q": MODEL})
        page = found.text
        marker = "/admin/models_api/modelentry/"
        start = page.index(marker, page.index('class="field-model_id"'))
        change_url = page[start:page.index('"', start)]
        form = _AdminForm()
        form.feed(browser.get(change_url).text)
        data = {k: v for k, v in form.fields.items() if k not in ("q",)} | changes
        saved = browser.post(change_url, data=data)
        assert saved.status_code == 302, saved.text[-3000:]


def test_admin_edits_change_the_next_answer_without_a_restart(own_server):
    base = own_server.base_url
    client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)

    def ask():
        return client.chat.completions.create(model=MODEL, messages=QUESTION, seed=3)

    before = ask()
    assert before.choices[0].finish_reason == "stop" and before.usage.completion_tokens > 3
    _edit_in_admin(base, default_temperature="0", default_max_tokens="3")
    assert httpx.get(f"{base}/v1/models/{MODEL}").json()["sampling_defaults"] == {
        "temperature": 0.0, "top_p": 0.9, "max_tokens": 3}
    after = ask()
    assert after.usage.completion_tokens == 3 and after.choices[0].finish_reason == "length"
    # A default stop string: the answer ends before it; the request's own stop replaces it.
    _edit_in_admin(base, default_max_tokens="", default_stop='["Paris"]')
    assert ask().choices[0].message.content == "The capital of France is "
    own = client.chat.completions.create(model=MODEL, messages=QUESTION, stop=["capital"])
    assert own.choices[0].message.content == "The "


def test_the_start_up_log_prints_the_defaults_once(own_server):
    httpx.post(f"{own_server.base_url}/v1/completions", timeout=300,
               json={"model": MODEL, "prompt": "Hi", "max_tokens": 1})
    lines = [line for line in own_server.log_tail(200_000).splitlines() if "sampling defaults" in line]
    assert len(lines) == 1, lines
    assert f"Loaded {MODEL}: sampling defaults temperature=0.2 top_p=0.9" in lines[0]
