"""Bearer keys on /v1/: 401 shapes, revoked and expired keys, env keys, model allow-lists."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from access.keys import hash_key
from access.models import APIKey
from tests.access.conftest import bearer
from tests.openai_schema import assert_matches_schema

pytestmark = pytest.mark.django_db


def assert_401(response, *, says: str) -> None:
    assert response.status_code == 401
    body = response.json()
    assert_matches_schema(body, "ErrorResponse")
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["code"] == "invalid_api_key"
    assert says in body["error"]["message"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_open_server_needs_no_key(client):
    assert not APIKey.objects.exists()
    assert client.get("/v1/models").status_code == 200
    assert client.get("/v1/models", **bearer("anything")).status_code == 200


def test_require_api_key_closes_a_server_without_keys(client, gpt3dev_settings):
    gpt3dev_settings["REQUIRE_API_KEY"] = True
    assert_401(client.get("/v1/models"), says="didn't provide an API key")


def test_missing_and_wrong_keys_are_401(client, make_key):
    make_key()
    assert_401(client.get("/v1/models"), says="didn't provide an API key")
    assert_401(client.get("/v1/models", HTTP_AUTHORIZATION="Basic abc"), says="didn't provide an API key")
    wrong = client.get("/v1/models", **bearer("sk-gpt3dev-this-is-not-the-key-1234"))
    assert_401(wrong, says="Incorrect API key provided")
    assert "this-is-not-the-key" not in wrong.json()["error"]["message"]  # masked, like OpenAI


def test_every_v1_route_is_guarded(client, make_key):
    make_key()
    for method, path in [("get", "/v1/models/SmolLM2-135M-Instruct"), ("post", "/v1/completions"),
                         ("post", "/v1/chat/completions"), ("post", "/v1/embeddings"), ("get", "/v1/nope")]:
        response = getattr(client, method)(path, data="{}", content_type="application/json") if method == "post" \
            else client.get(path)
        assert_401(response, says="API key")


def test_valid_key_works_and_records_last_use(client, make_key):
    row, key = make_key()
    assert key.startswith("sk-gpt3dev-") and len(key) > 40
    assert row.key_hash == hash_key(key) and key not in row.key_hash  # only the hash is stored
    response = client.get("/v1/models", **bearer(key))
    assert response.status_code == 200
    row.refresh_from_db()
    assert row.last_used is not None


def test_revoked_key_is_401(client, make_key):
    row, key = make_key(revoked=True)
    assert_401(client.get("/v1/models", **bearer(key)), says="has been revoked")


def test_expired_key_is_401_and_future_expiry_works(client, make_key):
    _, old = make_key("old", expires_at=timezone.now() - timedelta(minutes=1))
    _, fresh = make_key("fresh", expires_at=timezone.now() + timedelta(days=1))
    assert_401(client.get("/v1/models", **bearer(old)), says="expired")
    assert client.get("/v1/models", **bearer(fresh)).status_code == 200


def test_revoking_every_key_does_not_open_the_server(client, make_key):
    make_key(revoked=True)
    assert_401(client.get("/v1/models"), says="didn't provide")


def test_env_keys_compare_and_name(client, gpt3dev_settings):
    gpt3dev_settings["API_KEYS"] = ["bob:sk-env-bob-0123456789", "sk-env-bare-0123456789"]
    assert_401(client.get("/v1/models"), says="didn't provide")
    assert_401(client.get("/v1/models", **bearer("sk-env-bob-0123456788")), says="Incorrect")
    assert client.get("/v1/models", **bearer("sk-env-bob-0123456789")).status_code == 200
    assert client.get("/v1/models", **bearer("sk-env-bare-0123456789")).status_code == 200


def test_health_admin_and_cors_preflight_need_no_key(client, make_key, settings):
    make_key()
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    assert client.get("/healthz").status_code == 200
    preflight = client.options(
        "/v1/chat/completions",
        HTTP_ORIGIN="https://app.example.com",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
    )
    assert preflight.status_code == 200
    assert preflight["Access-Control-Allow-Origin"] == "https://app.example.com"
    # a 401 still carries CORS headers, so a browser client can read it
    denied = client.get("/v1/models", HTTP_ORIGIN="https://app.example.com")
    assert denied.status_code == 401
    assert denied["Access-Control-Allow-Origin"] == "https://app.example.com"


def test_model_allow_list_hides_other_models(client, make_key):
    _, key = make_key(allowed_models=["all-MiniLM-L6-v2"])
    listed = client.get("/v1/models", **bearer(key)).json()
    assert [m["id"] for m in listed["data"]] == ["all-MiniLM-L6-v2"]
    assert client.get("/v1/models/all-MiniLM-L6-v2", **bearer(key)).status_code == 200
    hidden = client.get("/v1/models/SmolLM2-135M-Instruct", **bearer(key))
    assert hidden.status_code == 404
    assert hidden.json()["error"]["code"] == "model_not_found"
    for path, body in [
        ("/v1/chat/completions", {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/completions", {"model": "SmolLM2-135M-Instruct", "prompt": "hi"}),
    ]:
        response = client.post(path, data=json.dumps(body), content_type="application/json", **bearer(key))
        assert response.status_code == 404, response.content  # as if it did not exist; nothing loaded
        assert response.json()["error"] == {
            "message": "The model 'SmolLM2-135M-Instruct' does not exist or you do not have access to it.",
            "type": "invalid_request_error", "param": "model", "code": "model_not_found",
        }


def test_unrestricted_key_sees_every_served_model(client, make_key):
    _, key = make_key()
    ids = {m["id"] for m in client.get("/v1/models", **bearer(key)).json()["data"]}
    assert ids == {"SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"}


def test_the_async_middleware_path(make_key):
    """Under ASGI the middleware runs natively async: the same answers and headers."""
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    _, key = make_key("async", requests_per_minute=2)
    client = AsyncClient()
    assert async_to_sync(client.get)("/v1/models").status_code == 401
    ok = async_to_sync(client.get)("/v1/models", headers={"Authorization": f"Bearer {key}", "X-Request-ID": "a-1"})
    assert ok.status_code == 200
    assert ok["x-ratelimit-remaining-requests"] == "1" and ok["X-Request-ID"] == "a-1"
    async_to_sync(client.get)("/v1/models", headers={"Authorization": f"Bearer {key}"})
    limited = async_to_sync(client.get)("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert limited.status_code == 429 and "Retry-After" in limited
