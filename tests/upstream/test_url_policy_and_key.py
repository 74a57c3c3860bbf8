"""Where an upstream row may point and who may point it: the URL policy at save (the
model's validation, the admin's form) and when connecting ("Test connection" over real
HTTP), and the stored key, which never follows a row to new servers. A capture server
(bench.fake_upstream) records every request, so "no key went there" is observed."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.test import Client

from bench.fake_upstream import FaultServer
from models_api.models import ModelEntry
from tests.models_api.test_admin import CHANGELIST, form_data
from upstream.credentials import decrypt_key, encrypt_key

pytestmark = pytest.mark.django_db

SECRET = "sk-stored-upstream-key-4d5e6f7a8b"


def upstream_row(**fields) -> ModelEntry:
    values = {"model_id": "remote", "source_type": "upstream", "source": "http://gpu-1:8000/v1", "is_chat": True}
    return ModelEntry(**(values | fields))


def refusal(source: str) -> str:
    with pytest.raises(ValidationError) as caught:
        upstream_row(source=source).full_clean()
    return " ".join(caught.value.message_dict["source"])


@pytest.mark.parametrize("source, words", [
    ("http://169.254.169.254/latest/meta-data", "link-local or cloud-metadata"),
    ("http://2852039166/v1", "link-local or cloud-metadata"),  # 169.254.169.254, decimal
    ("http://[fd00:ec2::254]/v1", "link-local or cloud-metadata"),
    ("http://[::ffff:169.254.169.254]/v1", "link-local or cloud-metadata"),
    ("http://localhost:5432/v1", "PostgreSQL"),
    ("http://127.0.0.1:6379/v1", "Redis"),
    ("http://0.0.0.0:8000/v1", "unspecified"),
    ("http://0/v1", "unspecified"),
])
def test_internal_targets_are_refused_even_when_their_network_is_listed(source, words, gpt3dev_settings):
    gpt3dev_settings["UPSTREAM_ALLOWED_HOSTS"] = ["localhost", "127.0.0.0/8", "169.254.0.0/16", "fd00::/8",
                                                  "0.0.0.0/8"]
    assert words in refusal(source)


@pytest.mark.parametrize("source, listed", [
    ("http://localhost:8000/v1", ["localhost"]),
    ("http://127.0.0.1:8000/v1", ["127.0.0.1"]),
    ("http://[::1]:8000/v1", ["[::1]"]),
    ("http://10.0.0.5:8000/v1", ["10.0.0.0/8"]),
    ("http://192.168.1.20:8000/v1", ["192.168.1.20"]),
])
def test_loopback_and_private_hosts_only_when_listed(source, listed, gpt3dev_settings):
    gpt3dev_settings["UPSTREAM_ALLOWED_HOSTS"] = []
    message = refusal(source)
    assert "UPSTREAM_ALLOWED_HOSTS" in message and ("loopback" in message or "private" in message)
    gpt3dev_settings["UPSTREAM_ALLOWED_HOSTS"] = listed
    upstream_row(source=source).full_clean()


def test_public_hosts_and_names_that_do_not_resolve_yet_are_accepted(gpt3dev_settings):
    gpt3dev_settings["UPSTREAM_ALLOWED_HOSTS"] = []
    upstream_row(source="https://8.8.8.8/v1 http://gpu-1.invalid:8000/v1").full_clean()


def test_the_admin_refuses_an_internal_url_naming_the_setting(admin_client_logged_in, gpt3dev_settings):
    gpt3dev_settings["UPSTREAM_ALLOWED_HOSTS"] = []
    entry = upstream_row()
    entry.save()
    url = f"{CHANGELIST}{entry.pk}/change/"
    page = admin_client_logged_in.post(url, form_data(entry, source="http://2852039166/v1")).content.decode()
    assert "link-local or cloud-metadata" in page
    page = admin_client_logged_in.post(url, form_data(entry, source="http://localhost:8000/v1")).content.decode()
    assert "UPSTREAM_ALLOWED_HOSTS=localhost" in page
    entry.refresh_from_db()
    assert entry.source == "http://gpu-1:8000/v1"


@pytest.fixture
def servers():
    legit, capture = FaultServer(name="legit").start(), FaultServer(name="capture").start()
    yield legit, capture
    legit.stop()
    capture.stop()


def keyed_row(legit: FaultServer) -> ModelEntry:
    entry = upstream_row(source=legit.base_url, upstream_model="upstream-name", upstream_api_key=encrypt_key(SECRET))
    entry.save()
    return entry


def run_test_connection(client: Client, entry: ModelEntry) -> str:
    response = client.post(CHANGELIST, {"action": "test_connection", "_selected_action": [entry.pk]}, follow=True)
    return response.content.decode()


def authorizations(server: FaultServer) -> list[str | None]:
    return [r.headers.get("authorization") for r in server.received]


@pytest.fixture
def staff(django_user_model) -> Client:
    user = django_user_model.objects.create_user("staff-upstream", password="a-long-password-1", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(
        codename__in=["add_modelentry", "change_modelentry", "view_modelentry"]))
    client = Client()
    client.force_login(user)
    return client


def test_a_staff_user_cannot_send_the_stored_key_anywhere(staff, servers, gpt3dev_settings):
    gpt3dev_settings["UPSTREAM_ALLOWED_HOSTS"] = ["127.0.0.1"]
    legit, capture = servers
    entry = keyed_row(legit)
    url = f"{CHANGELIST}{entry.pk}/change/"
    staff.post(url, form_data(entry, source=capture.base_url))  # read-only for staff: ignored
    run_test_connection(staff, entry)
    assert capture.received == []
    assert authorizations(legit) == [f"Bearer {SECRET}"]
    entry.refresh_from_db()
    assert entry.source == legit.base_url and decrypt_key(entry.upstream_api_key) == SECRET
    assert 'name="api_key"' not in staff.get(url).content.decode()  # no key box for staff
    page = staff.post(url, form_data(entry, api_key="sk-staff-typed")).content.decode()
    assert "Only a superuser may set the upstream servers or the upstream API key" in page
    new = upstream_row(model_id="staff-made", source=capture.base_url)
    page = staff.post(f"{CHANGELIST}add/", form_data(new)).content.decode()
    assert "Only a superuser may set the upstream servers" in page
    assert not ModelEntry.objects.filter(model_id="staff-made").exists()


def test_repointing_a_row_drops_its_key_unless_a_new_one_is_entered(admin_client_logged_in, servers,
                                                                    gpt3dev_settings):
    gpt3dev_settings["UPSTREAM_ALLOWED_HOSTS"] = ["127.0.0.1"]
    legit, capture = servers
    entry = keyed_row(legit)
    url = f"{CHANGELIST}{entry.pk}/change/"
    response = admin_client_logged_in.post(url, form_data(entry, source=capture.base_url), follow=True)
    entry.refresh_from_db()
    run_test_connection(admin_client_logged_in, entry)
    assert authorizations(capture) == [None]  # the request came, the key did not
    assert entry.source == capture.base_url and entry.upstream_api_key == ""
    assert "the stored upstream API key was removed" in response.content.decode()
    admin_client_logged_in.post(url, form_data(entry, api_key="sk-for-the-capture-server-1"))
    entry.refresh_from_db()
    run_test_connection(admin_client_logged_in, entry)
    assert authorizations(capture)[-1] == "Bearer sk-for-the-capture-server-1"
    admin_client_logged_in.post(url, form_data(entry, upstream_model="another-name"))
    entry.refresh_from_db()
    assert entry.upstream_api_key == ""  # a new model name is a new target too
    assert SECRET not in " ".join(str(a) for a in authorizations(capture))


def test_test_connection_refuses_an_internal_address_when_connecting(admin_client_logged_in, servers,
                                                                     gpt3dev_settings):
    gpt3dev_settings["UPSTREAM_ALLOWED_HOSTS"] = ["127.0.0.1"]
    _, capture = servers
    # Saved behind validation's back (as a name re-pointed after the save would be):
    # 0.0.0.0 reaches this machine, where the capture server listens.
    entry = upstream_row(source=f"http://0.0.0.0:{capture.port}/v1", upstream_api_key=encrypt_key(SECRET))
    entry.save()
    page = run_test_connection(admin_client_logged_in, entry)
    assert "refused by the upstream URL policy" in page
    assert capture.received == []
