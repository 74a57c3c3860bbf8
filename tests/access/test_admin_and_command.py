"""Keys made in the admin and by `create_api_key` are shown once and work; the admin
needs a login and a CSRF token."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from access.keys import hash_key
from access.models import APIKey
from tests.access.conftest import bearer

pytestmark = pytest.mark.django_db


def test_admin_add_shows_the_key_once(admin_client_logged_in, client):
    response = admin_client_logged_in.post(
        "/admin/access/apikey/add/",
        {"name": "erin", "allowed_models": "all-MiniLM-L6-v2", "requests_per_minute": "10",
         "tokens_per_minute": "", "expires_at_0": "", "expires_at_1": ""},
        follow=True,
    )
    assert response.status_code == 200
    shown = re.search(r"sk-gpt3dev-[A-Za-z0-9_-]{40,}", response.content.decode())
    assert shown, response.content.decode()[:3000]
    key = shown.group(0)
    row = APIKey.objects.get(name="erin")
    assert row.key_hash == hash_key(key) and row.prefix == key[:15]
    assert row.allowed_models == ["all-MiniLM-L6-v2"] and row.requests_per_minute == 10
    listing = admin_client_logged_in.get("/admin/access/apikey/").content.decode()
    assert "erin" in listing and key not in listing  # never shown again
    assert client.get("/v1/models", **bearer(key)).status_code == 200


def test_admin_key_for_every_model_and_unknown_ids(admin_client_logged_in):
    fields = {"requests_per_minute": "", "tokens_per_minute": "", "expires_at_0": "", "expires_at_1": ""}
    admin_client_logged_in.post("/admin/access/apikey/add/", {"name": "all", "allowed_models": "", **fields})
    assert APIKey.objects.get(name="all").allowed_models == []
    typo = admin_client_logged_in.post("/admin/access/apikey/add/",
                                       {"name": "typo", "allowed_models": "SmolLM3", **fields})
    assert "Unknown model id(s): SmolLM3" in typo.content.decode()
    assert not APIKey.objects.filter(name="typo").exists()
    row = APIKey.objects.get(name="all")
    change = admin_client_logged_in.get(f"/admin/access/apikey/{row.pk}/change/")
    assert change.status_code == 200 and "sk-gpt3dev-" not in change.content.decode().replace(row.prefix, "")


def test_admin_revoke_action(admin_client_logged_in, client):
    out = io.StringIO()
    call_command("create_api_key", "frank", stdout=out, stderr=io.StringIO())
    key = out.getvalue().strip()
    row = APIKey.objects.get(name="frank")
    admin_client_logged_in.post("/admin/access/apikey/", {"action": "revoke_keys", "_selected_action": [row.pk]})
    row.refresh_from_db()
    assert row.revoked
    assert client.get("/v1/models", **bearer(key)).status_code == 401


def test_create_api_key_command_options(client):
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", "grace", "--models", "SmolLM2-135M-Instruct", "--rpm", "5", "--tpm", "1000",
                 "--expires-days", "7", stdout=out, stderr=err)
    key = out.getvalue().strip()
    assert key.startswith("sk-gpt3dev-") and "not be shown again" in err.getvalue()
    row = APIKey.objects.get(name="grace")
    assert row.allowed_models == ["SmolLM2-135M-Instruct"]
    assert (row.requests_per_minute, row.tokens_per_minute) == (5, 1000)
    assert row.expires_at is not None
    assert client.get("/v1/models", **bearer(key)).json()["data"][0]["id"] == "SmolLM2-135M-Instruct"
    with pytest.raises(CommandError, match="name"):
        call_command("create_api_key", "grace", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(CommandError, match="Unknown model id"):
        call_command("create_api_key", "henry", "--models", "nope", stdout=io.StringIO(), stderr=io.StringIO())


def test_admin_needs_login_and_csrf(superuser):
    browser = Client(enforce_csrf_checks=True)
    response = browser.get("/admin/access/apikey/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    forged = browser.post("/admin/login/", {"username": "admin", "password": "a-long-password-1"})
    assert forged.status_code == 403  # no CSRF token


def test_no_traceback_reaches_a_client(client, monkeypatch):
    from models_api import views

    def boom(*args, **kwargs):
        raise RuntimeError("secret internals /srv/app/file.py")

    monkeypatch.setattr(views, "served_entries", boom)
    response = client.get("/v1/models")
    assert response.status_code == 500
    assert "secret" not in response.content.decode() and "Traceback" not in response.content.decode()
