"""GET /v1/models and /v1/models/{id}: OpenAI's shapes, the default registry, 404s."""

from __future__ import annotations

import openai.types
import pytest

from models_api.models import ModelEntry
from tests.openai_schema import assert_matches_schema

pytestmark = pytest.mark.django_db

DEFAULT_ENABLED = {"SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"}
EARLIER_HUB_MODELS = {
    "GPT4-dev-177M-1511-Instruct",
    "GPT4-dev-177M-1511",
    "GPT3-dev-350m-2805",
    "GPT3-dev-125m-0104",
    "GPT3-dev-125m-1202",
    "GPT3-dev-125m-0612",
    "GPT3-dev",
    "GPT3-dev-125m",
    "GPT-2",
}


def test_default_registry_rows():
    rows = {e.model_id: e for e in ModelEntry.objects.all()}
    assert DEFAULT_ENABLED | EARLIER_HUB_MODELS <= set(rows)
    assert all(rows[m].enabled for m in DEFAULT_ENABLED)
    assert not any(rows[m].enabled for m in EARLIER_HUB_MODELS)
    assert rows["SmolLM2-135M-Instruct"].is_chat
    assert rows["all-MiniLM-L6-v2"].task == "embeddings"
    assert rows["GPT-2"].source == "openai-community/gpt2"
    assert rows["GPT3-dev"].source == "k050506koch/GPT3-dev"


def test_list_models_matches_openai_schema(client):
    response = client.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert_matches_schema(body, "ListModelsResponse")
    assert {m["id"] for m in body["data"]} == DEFAULT_ENABLED
    # what the official SDK's client.models.list() parses
    page = [openai.types.Model.model_validate(item) for item in body["data"]]
    assert all(model.object == "model" and model.created > 0 for model in page)


def test_retrieve_model_with_metadata(client):
    response = client.get("/v1/models/SmolLM2-135M-Instruct")
    assert response.status_code == 200
    body = response.json()
    assert_matches_schema(body, "Model")
    assert body["id"] == "SmolLM2-135M-Instruct"
    assert body["owned_by"] == "HuggingFaceTB"
    assert body["metadata"]["parameter_count"] == "135M"
    assert body["chat"] is True
    assert body["dtype"] == "auto" and body["loaded_format"] is None  # not loaded in this process


@pytest.mark.model
def test_retrieve_model_says_which_weight_format_is_loaded(client):
    from models_api.engine import get_engine, load_model

    entry = ModelEntry.objects.get(model_id="SmolLM2-135M-Instruct")
    entry.dtype = "int8"
    entry.save()
    try:
        load_model(entry)
        body = client.get("/v1/models/SmolLM2-135M-Instruct").json()
        assert body["dtype"] == "int8" and body["loaded_format"] == "int8"
        ModelEntry.objects.filter(pk=entry.pk).update(dtype="float32")  # loaded, but not for these settings
        assert client.get("/v1/models/SmolLM2-135M-Instruct").json()["loaded_format"] is None
    finally:
        get_engine().unload("SmolLM2-135M-Instruct")


@pytest.mark.parametrize("model_id", ["no-such-model", "GPT-2"])  # unknown, and known but disabled
def test_unknown_or_disabled_model_is_404(client, model_id):
    response = client.get(f"/v1/models/{model_id}")
    assert response.status_code == 404
    body = response.json()
    assert_matches_schema(body, "ErrorResponse")
    assert body["error"]["code"] == "model_not_found"
    assert body["error"]["param"] == "model"
    assert model_id in body["error"]["message"]


def test_disabling_takes_effect_on_next_request(client):
    ModelEntry.objects.filter(model_id="all-MiniLM-L6-v2").update(enabled=False)
    ids = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert ids == {"SmolLM2-135M-Instruct"}


def test_include_default_models_off_hides_defaults(client, gpt3dev_settings):
    gpt3dev_settings["INCLUDE_DEFAULT_MODELS"] = False
    ModelEntry.objects.create(model_id="mine", source_type="hub", source="me/mine", origin="file")
    ids = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert ids == {"mine"}


def test_allow_list_narrows_served_models(client, gpt3dev_settings):
    gpt3dev_settings["MODEL_ALLOW_LIST"] = ["all-MiniLM-L6-v2"]
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["all-MiniLM-L6-v2"]
    assert client.get("/v1/models/SmolLM2-135M-Instruct").status_code == 404


def test_model_ids_with_slashes_route(client):
    ModelEntry.objects.create(model_id="org/name:v1", source_type="hub", source="org/name")
    response = client.get("/v1/models/org/name:v1")
    assert response.status_code == 200
    assert response.json()["id"] == "org/name:v1"


@pytest.mark.parametrize("model_id, window", [("SmolLM2-135M-Instruct", 8192), ("all-MiniLM-L6-v2", 256)])
def test_retrieve_model_reports_the_effective_window(client, model_id, window):
    """The window the engine enforces, read from the model's files without loading it."""
    assert client.get(f"/v1/models/{model_id}").json()["max_context_tokens"] == window


def test_a_registry_override_is_the_window(client):
    ModelEntry.objects.filter(model_id="SmolLM2-135M-Instruct").update(max_context_tokens=1024)
    assert client.get("/v1/models/SmolLM2-135M-Instruct").json()["max_context_tokens"] == 1024


def test_a_hub_model_not_downloaded_has_no_window_yet(client, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ModelEntry.objects.create(model_id="remote", source_type="hub", source="nobody/not-downloaded-here")
    assert client.get("/v1/models/remote").json()["max_context_tokens"] is None
