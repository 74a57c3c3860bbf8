"""A Responses request as the chat request the engine already serves.

``instructions`` become the system message, the replayed conversation and the input
items the other messages; function tools become chat tools (hosted tools are left out:
there is nothing here to run them); ``text.format`` becomes ``response_format``;
``max_output_tokens`` is ``max_completion_tokens``. Chat's planning then does the rest
(template, tool prompt, grammar, sampling), so both endpoints answer alike.

Errors found by chat's code name chat's fields; :func:`rename_error` puts them back in
the Responses request's words.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rest_framework import serializers

from completions.structured import ResponseFormatSerializer
from completions.tools import ToolPlan, validate_tools
from core.errors import APIError, invalid_value, validation_error
from responses.items import to_messages
from responses.serializers import LOGPROBS_INCLUDE

# Tools that run on OpenAI's side (Codex always sends web_search): accepted, not offered.
HOSTED_TOOLS = (
    "web_search", "web_search_preview", "file_search", "code_interpreter", "computer_use_preview", "computer",
    "mcp", "image_generation", "local_shell", "shell", "custom", "apply_patch",
)


def _function_tools(tools: Any) -> tuple[list[dict[str, Any]], list[int]]:
    """Chat-shaped function tools and, for each, its index in the request's ``tools``."""
    if tools is None:
        return [], []
    if not isinstance(tools, list):
        raise invalid_value("tools", "must be an array.")
    chat_tools, where = [], []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise invalid_value(f"tools[{i}]", "must be a tool object with a type.")
        if tool["type"] != "function":
            continue  # a hosted tool: not offered to the model (the docs list them)
        unknown = set(tool) - {"type", "name", "description", "parameters", "strict", "defer_loading", "output_schema",
                             "allowed_callers"}
        if unknown:
            raise invalid_value(f"tools[{i}].{sorted(unknown)[0]}", "unrecognized tool field.")
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
        chat_tools.append({"type": "function", "function": function})
        where.append(i)
    return chat_tools, where


def _chat_tool_choice(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("type") == "function":
        return {"type": "function", "function": {"name": value.get("name")}}
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        raise invalid_value("tool_choice", f"names the tool type {value['type']!r}, which this server does not run; "
                                           'use "auto", "required", "none" or {"type": "function", "name": ...}.')
    raise invalid_value("tool_choice", 'must be "none", "auto", "required" or {"type": "function", "name": ...}.')


def _rename_tool_detail(detail: Any, where: list[int]) -> Any:
    """Chat's ``tools[i].function.x`` error detail as ``tools[j].x`` of this request."""
    if isinstance(detail, dict) and "tools" in detail and isinstance(detail["tools"], dict):
        renamed = {}
        for index, inner in detail["tools"].items():
            if isinstance(inner, dict) and "function" in inner:
                inner = inner["function"]
            renamed[where[int(index)]] = inner
        return {"tools": renamed}
    return detail


def tool_plan(data: dict[str, Any]) -> ToolPlan | None:
    chat_tools, where = _function_tools(data.get("tools"))
    attrs = {"tools": chat_tools, "tool_choice": _chat_tool_choice(data.get("tool_choice")),
             "parallel_tool_calls": data.get("parallel_tool_calls")}
    if data.get("max_tool_calls") == 1:
        attrs["parallel_tool_calls"] = False
    try:
        plan = validate_tools(attrs)
    except serializers.ValidationError as exc:
        raise validation_error(_rename_tool_detail(exc.detail, where)) from None
    if plan is None:
        return None
    tools = tuple(dataclasses.replace(t, param=f"tools[{where[k]}].parameters") for k, t in enumerate(plan.tools))
    return dataclasses.replace(plan, tools=tools)


def response_format(text: Any) -> dict[str, Any] | None:
    """``text.format`` as chat's validated ``response_format``."""
    if text is None:
        return None
    if not isinstance(text, dict):
        raise invalid_value("text", "must be an object.")
    unknown = set(text) - {"format", "verbosity"}
    if unknown:
        raise invalid_value(f"text.{sorted(unknown)[0]}", "unrecognized field.")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise invalid_value("text.format", "must be an object with a type.")
    chat = {"type": fmt.get("type")}
    if fmt.get("type") == "json_schema":
        for name in ("name", "schema"):
            if name not in fmt:
                raise invalid_value(f"text.format.{name}", "is required when type is 'json_schema'.")
        chat["json_schema"] = {k: fmt[k] for k in ("name", "description", "schema", "strict") if k in fmt}
    s = ResponseFormatSerializer(data=chat)
    if not s.is_valid():
        detail = s.errors
        if "json_schema" in detail and isinstance(detail["json_schema"], dict):
            detail = detail["json_schema"]
        raise validation_error({"text": {"format": detail}})
    return s.validated_data


def logprobs_wanted(data: dict[str, Any]) -> bool:
    return LOGPROBS_INCLUDE in (data.get("include") or []) or bool(data.get("top_logprobs"))


def chat_data(data: dict[str, Any], history: list[dict[str, Any]], items: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat-shaped request chat's planning takes."""
    messages = to_messages(history + items)
    if data.get("instructions"):
        messages.insert(0, {"role": "system", "content": data["instructions"]})
    if not messages:
        raise invalid_value("input", "must hold at least one message.")
    logprobs = logprobs_wanted(data)
    return {
        "model": data["model"],
        "messages": messages,
        "tool_plan": tool_plan(data),
        "response_format": response_format(data.get("text")),
        "max_completion_tokens": data.get("max_output_tokens"),
        "temperature": data.get("temperature"),
        "top_p": data.get("top_p"),
        "seed": data.get("seed"),
        "logprobs": logprobs,
        "top_logprobs": (data.get("top_logprobs") or 0) if logprobs else None,
        "stream": bool(data.get("stream")),
    }


RENAMES = {
    "messages": "input",
    "response_format.json_schema.schema": "text.format.schema",
    "response_format": "text.format",
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
}


def rename_error(exc: APIError) -> APIError:
    """An error raised by chat's code, with the Responses field names."""
    new = RENAMES.get(exc.param or "")
    if new is None:
        return exc
    exc.message = exc.message.replace(f"'{exc.param}'", f"'{new}'")
    exc.args = (exc.message,)
    exc.param = new
    return exc
