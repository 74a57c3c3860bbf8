"""The playground page without a browser: its headers, its markup, the setting that turns
it off, the admin's link to it, and WhiteNoise serving its files (sync and async)."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from asgiref.sync import async_to_sync

from models_api.models import ModelEntry

PAGE = "/playground/"


class _Markup(HTMLParser):
    """Collects what a strict CSP would refuse: inline scripts, styles and handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            self.scripts.append(attributes)
            self._in_script = True
        if tag == "style":
            self.inline.append("<style>")
        for name in attributes:
            if name == "style" or name.startswith("on"):
                self.inline.append(f"<{tag} {name}=...>")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"<script>{data.strip()[:40]}")


def test_page_has_a_strict_content_security_policy(client):
    response = client.get(PAGE)
    assert response.status_code == 200
    policy = dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    assert "unsafe-eval" not in response["Content-Security-Policy"]


def test_page_markup_has_nothing_inline_and_loads_only_its_own_files(client):
    markup = _Markup()
    markup.feed(client.get(PAGE).content.decode())
    assert markup.inline == []
    assert [s.get("src") for s in markup.scripts] == ["/static/playground/main.js"]
    assert all(s.get("type") == "module" for s in markup.scripts)


def test_head_request_and_wrong_method(client):
    assert client.head(PAGE).status_code == 200
    assert client.post(PAGE).status_code == 405


def test_playground_disabled_is_a_404(client, gpt3dev_settings):
    gpt3dev_settings["PLAYGROUND_ENABLED"] = False
    assert client.get(PAGE).status_code == 404


@pytest.mark.django_db
def test_admin_links_text_generation_rows_to_the_playground(admin_client_logged_in):
    html = admin_client_logged_in.get("/admin/models_api/modelentry/").content.decode()
    assert 'href="/playground/?model=SmolLM2-135M-Instruct">Try in playground</a>' in html
    embedders = ModelEntry.objects.filter(task=ModelEntry.Task.EMBEDDINGS).values_list("model_id", flat=True)
    assert "all-MiniLM-L6-v2" in embedders
    assert "/playground/?model=all-MiniLM-L6-v2" not in html


@pytest.mark.django_db
def test_admin_has_no_link_when_the_playground_is_off(admin_client_logged_in, gpt3dev_settings):
    gpt3dev_settings["PLAYGROUND_ENABLED"] = False
    html = admin_client_logged_in.get("/admin/models_api/modelentry/").content.decode()
    assert "Try in playground" not in html


@pytest.fixture
def static_from_apps(settings, tmp_path):
    """WhiteNoise reading the apps' static/ folders (no collectstatic), as a server does
    whose STATIC_ROOT is empty."""
    settings.STATIC_ROOT = tmp_path
    settings.WHITENOISE_USE_FINDERS = True


def test_static_files_are_served_sync(client, static_from_apps):
    response = client.get("/static/playground/main.js")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    assert b"loadModels" in b"".join(response.streaming_content)
    assert client.get("/static/admin/css/base.css").status_code == 200


def test_static_files_are_served_async(async_client, static_from_apps):
    async def fetch() -> None:
        response = await async_client.get("/static/playground/playground.css")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/css")
        assert b"".join([chunk async for chunk in response]).startswith(b"/* The playground")
        assert (await async_client.get("/static/playground/nope.js")).status_code == 404

    async_to_sync(fetch)()
