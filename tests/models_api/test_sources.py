"""Local model sources must sit under MODEL_LOCAL_ROOTS: no '..', no symlink escapes;
the admin and registry-file imports refuse the rest."""

from __future__ import annotations

import json

import pytest

from models_api.models import ModelEntry
from models_api.registry_file import RegistryFileError, import_registry
from models_api.sources import SourceError, resolve_local_path


@pytest.fixture
def roots(tmp_path, gpt3dev_settings):
    allowed = tmp_path / "models"
    (allowed / "good").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    gpt3dev_settings["MODEL_LOCAL_ROOTS"] = [allowed]
    return tmp_path


def test_a_folder_under_a_root_is_accepted(roots):
    assert resolve_local_path("local", str(roots / "models" / "good")) == roots / "models" / "good"


@pytest.mark.parametrize("source", ["{tmp}/secret", "{tmp}/models/../secret", "{tmp}/models/good/../../secret",
                                    "relative/path", "/etc"])
def test_paths_outside_the_roots_are_refused(roots, source):
    with pytest.raises(SourceError):
        resolve_local_path("local", source.format(tmp=roots))


def test_dotdot_is_refused_even_when_it_stays_inside(roots):
    with pytest.raises(SourceError, match=r"\.\."):
        resolve_local_path("local", str(roots / "models" / "good" / ".." / "good"))


def test_a_symlink_out_of_a_root_is_refused(roots):
    link = roots / "models" / "escape"
    link.symlink_to(roots / "secret")
    with pytest.raises(SourceError, match="symlink"):
        resolve_local_path("local", str(link))
    inner = roots / "models" / "inner"
    inner.symlink_to(roots / "models" / "good")  # a symlink that stays inside is fine
    assert resolve_local_path("local", str(inner)) == inner


def test_no_roots_means_no_local_sources(roots, gpt3dev_settings):
    gpt3dev_settings["MODEL_LOCAL_ROOTS"] = []
    with pytest.raises(SourceError, match="MODEL_LOCAL_ROOTS"):
        resolve_local_path("local", str(roots / "models" / "good"))


@pytest.mark.django_db
def test_registry_import_refuses_an_escaping_path(roots):
    with pytest.raises(RegistryFileError, match="outside"):
        import_registry([{"name": "sneaky", "path": str(roots / "secret")}])
    assert not ModelEntry.objects.filter(model_id="sneaky").exists()
    import_registry([{"name": "fine", "path": str(roots / "models" / "good")}])
    assert ModelEntry.objects.get(model_id="fine").source_type == "local"


@pytest.mark.django_db
def test_admin_refuses_an_escaping_path(admin_client_logged_in, roots):
    data = {
        "model_id": "sneaky", "enabled": "on", "task": "text-generation", "owned_by": "me",
        "source_type": "local", "source": str(roots / "models" / ".." / "secret"), "revision": "",
        "dtype": "auto", "device": "auto", "max_context_tokens": "", "chat_template": "",
        "input_token_encoding": "", "source_links": json.dumps([]),
    }
    response = admin_client_logged_in.post("/admin/models_api/modelentry/add/", data)
    assert response.status_code == 200  # the form again, with the error
    assert "may not contain" in response.content.decode()
    assert not ModelEntry.objects.filter(model_id="sneaky").exists()
