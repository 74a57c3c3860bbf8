"""Upstream rows in the registry: validation, the registry file, the admin's write-only
key and "test connection", and the stored key's encryption."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from bench.fake_upstream import FaultServer
from models_api.models import ModelEntry
from models_api.registry_file import RegistryFileError, import_registry
from tests.models_api.test_admin import CHANGELIST, form_data
from upstream.credentials import UnreadableKey, decrypt_key, encrypt_key

pytestmark = pytest.mark.django_db

SECRET = "sk-upstream-admin-5e6f7a8b9c"


def upstream_row(**fields) -> ModelEntry:
    values = {"model_id": "remote", "source_type": "upstream", "source": "http://gpu-1:8000/v1", "is_chat": True}
    return ModelEntry(**(values | fields))


@pytest.mark.parametrize("source, words", [
    ("", "at least one"),
    ("ftp://gpu-1/v1", "not an http(s) URL"),
    ("http://user:pw@gpu-1:8000/v1", "holds credentials"),
    ("http://gpu-1:8000/v1?x=1", "query"),
    ("http://gpu-1:8000/v1 http://gpu-1:8000/v1/", "listed twice"),
    ("http://gpu-1:99999/v1", "invalid port"),
])
def test_bad_upstream_urls_are_refused_naming_the_problem(source, words):
    with pytest.raises(ValidationError) as caught:
        upstream_row(source=source).full_clean()
    assert words in " ".join(caught.value.message_dict["source"])


def test_several_urls_are_normalised_and_local_settings_refused():
    entry = upstream_row(source=" http://gpu-1:8000/v1/ ,http://gpu-2:8000/v1")
    entry.full_clean()
    assert entry.upstream_urls() == ["http://gpu-1:8000/v1", "http://gpu-2:8000/v1"]
    with pytest.raises(ValidationError) as caught:
        upstream_row(dtype="int8").full_clean()
    assert "dtype" in caught.value.message_dict
    with pytest.raises(ValidationError) as caught:
        ModelEntry(model_id="x", source_type="hub", source="a/b", upstream_model="y").full_clean()
    assert "upstream_model" in caught.value.message_dict


def test_the_key_is_encrypted_and_a_changed_secret_key_is_a_clear_error(settings):
    stored = encrypt_key(SECRET)
    assert SECRET not in stored and decrypt_key(stored) == SECRET
    assert encrypt_key(SECRET) != stored  # a fresh nonce each time
    settings.SECRET_KEY = "another-secret-key-for-this-test-0123456789"
    with pytest.raises(UnreadableKey, match="enter it again"):
        decrypt_key(stored)


def test_registry_file_upstream_entries_import_once(monkeypatch):
    monkeypatch.setenv("REMOTE_KEY", SECRET)
    entries = [{"name": "remote", "upstream": ["http://gpu-1:8000/v1", "http://gpu-2:8000/v1"],
                "upstream_model": "meta-llama/Llama-3.1-8B-Instruct", "is_chat": True, "api_key_env": "REMOTE_KEY",
                "timeout": 60, "max_concurrency": 32}]
    assert import_registry(entries).created == ["remote"]
    entry = ModelEntry.objects.get(model_id="remote")
    assert entry.upstream_urls() == ["http://gpu-1:8000/v1", "http://gpu-2:8000/v1"]
    assert (entry.upstream_timeout, entry.upstream_max_concurrency) == (60, 32)
    assert decrypt_key(entry.upstream_api_key) == SECRET and SECRET not in entry.upstream_api_key
    assert import_registry(entries).unchanged == ["remote"]
    with pytest.raises(RegistryFileError, match="api_key_env"):
        import_registry([entries[0] | {"api_key": SECRET}])
    monkeypatch.delenv("REMOTE_KEY")
    with pytest.raises(RegistryFileError, match="REMOTE_KEY"):
        import_registry(entries)


def test_admin_key_is_write_only(admin_client_logged_in):
    entry = upstream_row()
    entry.save()
    url = f"{CHANGELIST}{entry.pk}/change/"
    response = admin_client_logged_in.post(url, form_data(entry, api_key=SECRET))
    assert response.status_code == 302, response.content.decode()[:3000]
    entry.refresh_from_db()
    assert decrypt_key(entry.upstream_api_key) == SECRET
    page = admin_client_logged_in.get(url).content.decode()
    assert SECRET not in page and entry.upstream_api_key not in page
    assert "stored (encrypted)" in page
    # saving again without typing a key keeps it; the box clears it
    assert admin_client_logged_in.post(url, form_data(entry, description="x")).status_code == 302
    entry.refresh_from_db()
    assert decrypt_key(entry.upstream_api_key) == SECRET
    assert admin_client_logged_in.post(url, form_data(entry, clear_api_key="on")).status_code == 302
    entry.refresh_from_db()
    assert entry.upstream_api_key == ""


def test_admin_test_connection_reports_each_server(admin_client_logged_in, gpt3dev_settings):
    gpt3dev_settings["UPSTREAM_ALLOWED_HOSTS"] = ["127.0.0.1"]  # the fake upstream's loopback
    server = FaultServer(models=("the-upstream-name",)).start()
    try:
        good = upstream_row(model_id="good", source=server.base_url, upstream_model="the-upstream-name",
                            upstream_api_key=encrypt_key(SECRET))
        wrong = upstream_row(model_id="wrong", source=f"{server.base_url} http://127.0.0.1:9/v1")
        good.save()
        wrong.save()
        response = admin_client_logged_in.post(
            CHANGELIST, {"action": "test_connection", "_selected_action": [good.pk, wrong.pk]}, follow=True)
        page = response.content.decode().lower()  # the admin capitalises messages
        assert f"good at {server.base_url}: reachable; &#x27;the-upstream-name&#x27; is served there" in page
        assert f"wrong at {server.base_url}: reachable; &#x27;wrong&#x27; is not among the models" in page
        assert "wrong at http://127.0.0.1:9/v1: connection refused" in page
        assert server.received[0].headers["authorization"] == f"Bearer {SECRET}"
        assert SECRET.lower() not in page
    finally:
        server.stop()


def test_the_deployment_example_registry_imports(monkeypatch):
    from models_api.registry_file import read_registry_file
    from tests.live_server import ROOT

    monkeypatch.setenv("VLLM_API_KEY", SECRET)
    (created,) = import_registry(read_registry_file(ROOT / "docs" / "deploy" / "registry.yaml")).created
    entry = ModelEntry.objects.get(model_id=created)
    assert entry.is_upstream and len(entry.upstream_urls()) == 2 and decrypt_key(entry.upstream_api_key) == SECRET
