"""The Responses app without a model: input items, the translation to chat, retention,
interrupted background rows, the purge command and the read-only admin."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from core.errors import APIError
from responses import store
from responses.items import normalise_input, to_messages
from responses.models import StoredResponse
from responses.translate import chat_data, response_format, tool_plan


def test_a_string_input_is_one_user_message():
    items = normalise_input("Hi")
    assert [(i["type"], i["role"], i["content"][0]["text"]) for i in items] == [("message", "user", "Hi")]
    assert items[0]["id"].startswith("msg_")


def test_calls_join_the_assistant_turn_and_outputs_become_tool_messages():
    items = normalise_input([
        {"role": "user", "content": "Weather?"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    ])
    assert [i["type"] for i in items] == ["message", "message", "function_call", "function_call_output"]
    assert to_messages(items) == [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Let me look.",
         "tool_calls": [{"id": "call_1", "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
    ]


@pytest.mark.parametrize(("value", "param"), [
    (42, "input"),
    ([{"role": "robot", "content": "x"}], "input[0].role"),
    ([{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}], "input[0].content[0]"),
    ([{"type": "function_call", "name": "f", "arguments": "{}"}], "input[0].call_id"),
    ([{"type": "item_reference", "id": "msg_1"}], "input[0].type"),
])
def test_bad_items_name_their_place(value, param):
    with pytest.raises(APIError) as refused:
        normalise_input(value)
    assert refused.value.status == 400 and refused.value.param == param


def test_hosted_tools_are_left_out_and_errors_name_the_request_index():
    plan = tool_plan({"tools": [{"type": "web_search"}, {"type": "function", "name": "f", "parameters": {}}]})
    assert [t.name for t in plan.tools] == ["f"] and plan.tools[0].param == "tools[1].parameters"
    assert tool_plan({"tools": [{"type": "web_search"}]}) is None
    with pytest.raises(APIError) as refused:
        tool_plan({"tools": [{"type": "web_search"}, {"type": "function", "name": "no spaces"}]})
    assert refused.value.param == "tools[1].name"
    with pytest.raises(APIError) as refused:
        tool_plan({"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "web_search"}})
    assert refused.value.param == "tool_choice"


def test_text_format_becomes_response_format():
    assert response_format({"format": {"type": "json_schema", "name": "city", "schema": {"type": "object"},
                                        "strict": True}}) == {
        "type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"}, "strict": True}}
    with pytest.raises(APIError) as refused:
        response_format({"format": {"type": "xml"}})
    assert refused.value.param == "text.format.type"


def test_instructions_come_first_and_are_not_replayed():
    history = normalise_input("Earlier question")
    data = chat_data({"model": "m", "instructions": "Be brief.", "max_output_tokens": 5}, history,
                     normalise_input("New question"))
    assert [m["role"] for m in data["messages"]] == ["system", "user", "user"]
    assert data["max_completion_tokens"] == 5 and data["tool_plan"] is None


def _row(response_id: str, *, days_old: float = 0, status: str = "completed", worker: str = "", owner: str = ""):
    return StoredResponse.objects.create(
        id=response_id, owner=owner, model="m", status=status, background=bool(worker),
        created_at=timezone.now() - timedelta(days=days_old), worker=worker,
        body={"id": response_id, "status": status, "output": []})


@pytest.mark.django_db
def test_purge_drops_expired_rows_and_the_oldest_over_the_cap(gpt3dev_settings):
    gpt3dev_settings["RESPONSES_RETENTION_DAYS"] = 30
    gpt3dev_settings["RESPONSES_MAX_STORED"] = 2
    _row("resp_old", days_old=31)
    _row("resp_a", days_old=3)
    _row("resp_b", days_old=2)
    _row("resp_c", days_old=1)
    assert store.purge() == (1, 1)
    assert sorted(StoredResponse.objects.values_list("id", flat=True)) == ["resp_b", "resp_c"]
    out = StringIO()
    call_command("purge_responses", "--keep", "1", stdout=out)
    assert "Deleted 0 expired and 1 over-cap" in out.getvalue()
    assert list(StoredResponse.objects.values_list("id", flat=True)) == ["resp_c"]


@pytest.mark.django_db
def test_unfinished_rows_of_a_gone_process_are_marked_failed():
    gone = f"{store.HOST}:999999:deadbeef0000"  # no such pid
    elsewhere = "another-host:1:abc"
    _row("resp_gone", status="in_progress", worker=gone)
    _row("resp_elsewhere", status="in_progress", worker=elsewhere)
    assert store.fail_interrupted() == 1
    failed = StoredResponse.objects.get(pk="resp_gone")
    assert failed.status == "failed" and "stopped before" in failed.body["error"]["message"]
    assert StoredResponse.objects.get(pk="resp_elsewhere").status == "in_progress"


@pytest.mark.django_db
def test_rows_are_read_by_their_owner_only():
    _row("resp_x", owner="db:1")
    assert store.get_owned("db:1", "resp_x") is not None
    assert store.get_owned("db:2", "resp_x") is None
    assert store.get_owned("", "resp_x") is None


@pytest.mark.django_db
def test_the_admin_is_read_only(admin_client_logged_in):
    _row("resp_admin")
    page = admin_client_logged_in.get("/admin/responses/storedresponse/resp_admin/change/")
    assert page.status_code == 200 and b"resp_admin" in page.content
    assert admin_client_logged_in.get("/admin/responses/storedresponse/add/").status_code == 403
    listing = admin_client_logged_in.get("/admin/responses/storedresponse/")
    assert listing.status_code == 200 and b"resp_admin" in listing.content
