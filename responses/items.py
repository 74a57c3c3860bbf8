"""Input items: checked and normalised as the request arrives, stored as OpenAI lists
them (``GET .../input_items``), and turned into chat messages for the model.

Items a text model can use: messages (roles ``user``, ``system``, ``developer``,
``assistant``; string content or ``input_text``/``output_text`` parts),
``function_call`` and ``function_call_output``. ``reasoning`` items (passed back by
clients that replay a whole output) carry nothing for these models and are skipped.
Anything else is a 400 naming the item.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from core.errors import APIError, invalid_value

ROLES = ("user", "system", "developer", "assistant")
TEXT_PARTS = ("input_text", "output_text", "text")


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _text_of(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid_value(param, "must be a string or an array of content parts.")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
            continue
        if kind not in TEXT_PARTS:
            raise invalid_value(
                f"{param}[{j}]",
                f"content parts of type {kind!r} are not supported: these models read text "
                f"(input_text or output_text parts) only.",
            )
        if not isinstance(part.get("text"), str):
            raise invalid_value(f"{param}[{j}].text", "must be a string.")
        texts.append(part["text"])
    return "\n".join(texts)


def _string(item: dict[str, Any], name: str, param: str, *, blank: bool = False) -> str:
    value = item.get(name)
    if not isinstance(value, str) or (not blank and not value):
        raise invalid_value(f"{param}.{name}", "must be a non-empty string." if not blank else "must be a string.")
    return value


def normalise_input(value: Any) -> list[dict[str, Any]]:
    """The request's ``input`` as stored items, each with an ``id`` (a string input is
    one user message). Reasoning items are dropped here."""
    if isinstance(value, str):
        return [_message("user", value)]
    if not isinstance(value, list):
        raise invalid_value("input", "must be a string or an array of input items.")
    items: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid_value(param, "must be an input item object.")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ROLES:
                raise invalid_value(f"{param}.role", f"must be one of {', '.join(ROLES)}.")
            items.append(_message(role, _text_of(item.get("content"), f"{param}.content"), item.get("id")))
        elif kind == "function_call":
            arguments = _string(item, "arguments", param, blank=True)
            items.append({
                "type": "function_call", "id": item.get("id") or new_id("fc"),
                "call_id": _string(item, "call_id", param), "name": _string(item, "name", param),
                "arguments": arguments, "status": "completed",
            })
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _text_of(output, f"{param}.output")
            items.append({
                "type": "function_call_output", "id": item.get("id") or new_id("fco"),
                "call_id": _string(item, "call_id", param), "output": text, "status": "completed",
            })
        elif kind == "reasoning":
            continue
        else:
            raise invalid_value(
                f"{param}.type",
                f"input items of type {kind!r} are not supported here: use messages, function_call and "
                "function_call_output items (reasoning items are accepted and skipped).",
            )
    return items


def _message(role: str, text: str, item_id: Any = None) -> dict[str, Any]:
    item_id = item_id if isinstance(item_id, str) and item_id else new_id("msg")
    if role == "assistant":
        return {"type": "message", "id": item_id, "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}
    return {"type": "message", "id": item_id, "role": role, "status": "completed",
            "content": [{"type": "input_text", "text": text}]}


def to_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored items (input or output) as chat messages in the shape
    ``completions.tools.render_messages`` takes: calls join the assistant turn before
    them, call outputs become tool messages."""
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type")
        if kind == "message":
            text = "\n".join(p.get("text") or p.get("refusal") or "" for p in item.get("content") or [])
            role = "system" if item["role"] == "developer" else item["role"]
            messages.append({"role": role, "content": text})
        elif kind == "function_call":
            call = {"id": item["call_id"], "name": item["name"], "arguments": item["arguments"]}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "content": item["output"], "tool_call_id": item["call_id"]})
    return messages


def input_chars(value: Any) -> int:
    """Characters of text in an ``input`` (for the upstream reservation estimate)."""
    if isinstance(value, str):
        return len(value)
    return len(json.dumps(value, ensure_ascii=False)) if value else 0


def require_items(items: list[dict[str, Any]], previous: bool) -> None:
    if not items and not previous:
        raise APIError(400, "Invalid value for 'input': must hold at least one item.", param="input")
