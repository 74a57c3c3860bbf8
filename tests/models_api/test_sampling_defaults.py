"""Per-model sampling defaults in the registry: the shipped SmolLM2 row's card values,
/v1/models/{id}'s ``sampling_defaults``, MODEL_SAMPLING_DEFAULTS=0, the admin's fieldset
and checks, seeding from generation_config.json on create and import, registry files,
the precedence rule (request > row > OpenAI) and the load log line."""

from __future__ import annotations

import json
import logging

import pytest

from completions.serving import default_length as _default_length
from completions.serving import sampling_params as _sampling
from models_api.engine import log_sampling_defaults
from models_api.models import ModelEntry
from models_api.registry_file import RegistryFileError, import_registry
from models_api.sampling import defaults_from_generation_config

pytestmark = pytest.mark.django_db

MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture
def model_folder(tmp_path, gpt3dev_settings):
    """A local model folder (only its generation_config.json matters here)."""
    gpt3dev_settings["MODEL_LOCAL_ROOTS"] = [tmp_path]
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def write_generation_config(folder, **keys) -> None:
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2, **keys}))


def test_the_shipped_smollm2_row_has_its_cards_defaults(client):
    assert ModelEntry.objects.get(model_id=MODEL).sampling_defaults() == {"temperature": 0.2, "top_p": 0.9}
    assert client.get(f"/v1/models/{MODEL}").json()["sampling_defaults"] == {"temperature": 0.2, "top_p": 0.9}
    assert client.get("/v1/models/all-MiniLM-L6-v2").json()["sampling_defaults"] == {}


def test_only_the_fields_set_are_shown(client):
    ModelEntry.objects.filter(model_id=MODEL).update(default_top_p=None, default_max_tokens=64, default_stop=["\n\n"])
    shown = client.get(f"/v1/models/{MODEL}").json()["sampling_defaults"]
    assert shown == {"temperature": 0.2, "max_tokens": 64, "stop": ["\n\n"]}


def test_model_sampling_defaults_0_turns_them_off(client, gpt3dev_settings):
    gpt3dev_settings["MODEL_SAMPLING_DEFAULTS"] = False
    assert client.get(f"/v1/models/{MODEL}").json()["sampling_defaults"] == {}


def test_precedence_request_then_row_then_openai():
    row = {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "stop": ["\n\n"], "repetition_penalty": 1.1}
    none = _sampling({}, max_tokens=16, logprobs=None, defaults={})
    assert (none.temperature, none.top_p, none.top_k, none.stop, none.repetition_penalty) == (1.0, 1.0, 0, (), 1.0)
    rows = _sampling({}, max_tokens=16, logprobs=None, defaults=row)
    got = (rows.temperature, rows.top_p, rows.top_k, rows.stop, rows.repetition_penalty)
    assert got == (0.2, 0.9, 40, ("\n\n",), 1.1)
    sent = {"temperature": 0, "top_p": None, "top_k": -1, "stop": (), "presence_penalty": 0.5}
    mixed = _sampling(sent, max_tokens=16, logprobs=None, defaults=row)
    # temperature 0 stays greedy, null falls through, -1 is off, an empty stop list is "no stop"
    assert (mixed.temperature, mixed.top_p, mixed.top_k, mixed.stop, mixed.presence_penalty) == (0, 0.9, 0, (), 0.5)
    assert _default_length({"max_tokens": 500}, 100, 16) == 100  # cut to what is left of the window
    assert _default_length({"max_tokens": 50}, 100, 16) == 50
    assert _default_length({}, 100, 16) == 16


def test_admin_shows_the_fieldset_and_checks_ranges(admin_client_logged_in):
    entry = ModelEntry.objects.get(model_id=MODEL)
    url = f"/admin/models_api/modelentry/{entry.pk}/change/"
    page = admin_client_logged_in.get(url).content.decode()
    assert "Sampling defaults (text generation)" in page and "MODEL_SAMPLING_DEFAULTS=0" in page
    assert 'name="default_temperature"' in page and 'value="0.2"' in page
    from tests.models_api.test_admin import form_data

    for field, value, message in [
        ("default_temperature", "2.5", "0.0 to 2.0"),
        ("default_top_p", "0", "above 0.0"),
        ("default_top_k", "-2", "at least -1"),
        ("default_stop", '["a", ""]', "non-empty strings"),
        ("default_stop", '["a", "b", "c", "d", "e"]', "At most 4"),
    ]:
        response = admin_client_logged_in.post(url, form_data(entry) | {field: value})
        assert response.status_code == 200, field
        assert message in response.context["adminform"].form.errors[field][0]
    saved = admin_client_logged_in.post(url,
                                        form_data(entry) | {"default_temperature": "0.7", "default_stop": '["END"]'})
    assert saved.status_code == 302
    assert ModelEntry.objects.get(model_id=MODEL).sampling_defaults() == {"temperature": 0.7, "top_p": 0.9,
                                                                          "stop": ["END"]}


def test_an_embeddings_or_upstream_row_has_no_defaults():
    embedder = ModelEntry.objects.get(model_id="all-MiniLM-L6-v2")
    embedder.default_temperature = 0.5
    with pytest.raises(Exception) as refused:
        embedder.full_clean()
    assert "text-generation models only" in str(refused.value)
    upstream = ModelEntry(model_id="up", source_type="upstream", source="http://gpu-1:8000/v1", default_top_p=0.5)
    with pytest.raises(Exception) as refused:
        upstream.full_clean()
    assert "upstream server applies its own" in str(refused.value)


def test_admin_create_seeds_from_generation_config(admin_client_logged_in, model_folder):
    write_generation_config(model_folder, do_sample=True, temperature=0.6, top_p=0.95, top_k=20,
                            repetition_penalty=1.05, max_new_tokens=512, max_length=99999)
    from tests.models_api.test_admin import form_data

    template = ModelEntry(model_id="my-model", source_type="local", source=str(model_folder), task="text-generation")
    response = admin_client_logged_in.post("/admin/models_api/modelentry/add/", form_data(template) | {
        "default_top_p": "0.8"}, follow=True)
    assert response.status_code == 200
    messages = [str(m) for m in response.context["messages"]]
    assert any("generation_config.json: temperature=0.6 top_k=20" in m for m in messages), messages
    # what the admin typed wins over the file; the rest is seeded
    assert ModelEntry.objects.get(model_id="my-model").sampling_defaults() == {
        "temperature": 0.6, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05, "max_tokens": 512}


def test_generation_config_keys_and_greedy_configs():
    assert defaults_from_generation_config({"do_sample": False, "temperature": 0.6, "top_p": 0.9,
                                            "repetition_penalty": 1.2}) == {"repetition_penalty": 1.2}
    assert defaults_from_generation_config({"temperature": 7, "top_p": 0, "top_k": 50.5, "stop_strings": "END",
                                            "min_p": 0.05}) == {"stop": ["END"], "min_p": 0.05}
    assert defaults_from_generation_config({"eos_token_id": 2}) == {}


def test_import_seeds_a_new_row_and_keeps_an_edited_one(tmp_path, model_folder):
    write_generation_config(model_folder, temperature=0.6, top_p=0.95)
    registry = [{"name": "my-model", "path": str(model_folder), "is_instruct": True}]
    report = import_registry(registry)
    assert report.created == ["my-model"]
    entry = ModelEntry.objects.get(model_id="my-model")
    assert entry.sampling_defaults() == {"temperature": 0.6, "top_p": 0.95}
    entry.default_temperature = 0.3  # an admin's edit survives a re-import of the same file
    entry.save()
    assert import_registry(registry).unchanged == ["my-model"]
    assert ModelEntry.objects.get(model_id="my-model").default_temperature == 0.3


def test_registry_file_sampling_defaults(model_folder):
    write_generation_config(model_folder, temperature=0.6)
    given = {"temperature": 0.1, "max_tokens": 200, "stop": "\n\nUser:"}
    registry = [{"name": "my-model", "path": str(model_folder), "sampling_defaults": given}]
    import_registry(registry)
    assert ModelEntry.objects.get(model_id="my-model").sampling_defaults() == {
        "temperature": 0.1, "max_tokens": 200, "stop": ["\n\nUser:"]}  # the file's, not the config's
    assert import_registry(registry).unchanged == ["my-model"]
    import_registry([{**registry[0], "sampling_defaults": {"top_p": 0.5}}])  # a key left out clears it
    assert ModelEntry.objects.get(model_id="my-model").sampling_defaults() == {"top_p": 0.5}


@pytest.mark.parametrize("given, message", [
    ({"temprature": 0.1}, "sampling_defaults.temprature is not a sampling field"),
    ({"temperature": 3}, "sampling_defaults.temperature: Give a number from 0.0 to 2.0."),
    ({"max_tokens": 0}, "sampling_defaults.max_tokens"),
    ({"stop": [1]}, "sampling_defaults.stop"),
    ("hot", "'sampling_defaults' must be a mapping"),
])
def test_registry_file_errors_name_the_key(model_folder, given, message):
    with pytest.raises(RegistryFileError) as error:
        import_registry([{"name": "my-model", "path": str(model_folder), "sampling_defaults": given}])
    assert message in str(error.value)


def test_turning_a_default_row_into_an_upstream_row_drops_its_defaults():
    import_registry([{"name": MODEL, "upstream": "http://gpu-1:8000/v1", "is_chat": True}])
    entry = ModelEntry.objects.get(model_id=MODEL)
    assert entry.is_upstream and entry.sampling_defaults() == {}


def test_the_load_log_line(caplog, gpt3dev_settings):
    entry = ModelEntry.objects.get(model_id=MODEL)
    with caplog.at_level(logging.INFO, logger="gpt3dev.models"):
        log_sampling_defaults(entry)
        log_sampling_defaults(ModelEntry.objects.get(model_id="GPT-2"))
        gpt3dev_settings["MODEL_SAMPLING_DEFAULTS"] = False
        log_sampling_defaults(entry)
    assert caplog.messages == [
        f"Loaded {MODEL}: sampling defaults temperature=0.2 top_p=0.9 (a request's own fields win)",
        "Loaded GPT-2: sampling defaults none: OpenAI's apply (a request's own fields win)",
        f"Loaded {MODEL}: registry sampling defaults are off (MODEL_SAMPLING_DEFAULTS=0): OpenAI's apply",
    ]
