"""Tool calling on chat: request shapes, the prompt, the output grammar, and the answer
in OpenAI's shapes (whole and as streamed deltas).

Every model writes calls in one format, Hermes-style blocks (Qwen2.5/3, Hermes,
SmolLM3 and others are trained on it)::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

- Prompt: a chat template that takes ``tools`` renders them (and the history's calls
  and results) itself. Otherwise the generic format: the tool list and these
  instructions go into the system message, earlier calls are written as blocks in the
  assistant turn and results as ``<tool_response>`` blocks in a user turn.
- Output: a Lark grammar (llguidance) with one alternative per tool whose arguments
  are constrained by the tool's ``parameters`` schema. ``required`` and a named
  function allow only calls from the first token (a named function: one call);
  ``auto`` allows a text reply (one that does not start with ``<tool_call>``) or calls;
  ``parallel_tool_calls: false`` allows one call. ``none`` sends no grammar and no tools.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from rest_framework import serializers

from completions.structured import NAME_RE
from gpt3dev.fields import StrictCharField
from inference.constraints import GrammarSpec, lark_json, lark_string, json_schema_spec

OPEN, CLOSE = "<tool_call>\n", "\n</tool_call>"
ARGUMENTS = '"arguments": '
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


# ----------------------------------------------------------------------------- request
class FunctionSerializer(serializers.Serializer):
    name = serializers.RegexField(NAME_RE, error_messages={"invalid": "must be 1-64 letters, digits, underscores or dashes."})
    description = StrictCharField(required=False, allow_blank=True, allow_null=True)
    parameters = serializers.JSONField(required=False, allow_null=True)
    strict = serializers.BooleanField(required=False, allow_null=True)

    def validate_parameters(self, value: Any) -> Any:
        if value is not None and not isinstance(value, dict):
            raise serializers.ValidationError("must be a JSON schema object.")
        return value


class ToolSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["function"])
    function = FunctionSerializer()


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    param: str  # where its schema is in the request, for errors

    def openai(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolPlan:
    tools: tuple[Tool, ...]
    choice: str  # "auto" | "required" | a function name
    parallel: bool
    legacy: bool  # asked with functions/function_call: answer with message.function_call


def _choice_name(value: Any, field_name: str) -> str:
    if value in ("none", "auto", "required") and not (field_name == "function_call" and value == "required"):
        return value
    if isinstance(value, dict):
        name = (value.get("function") or {}).get("name") if field_name == "tool_choice" else value.get("name")
        if field_name == "tool_choice" and value.get("type") != "function":
            name = None
        if isinstance(name, str) and name:
            return name
    shape = '{"type": "function", "function": {"name": ...}}' if field_name == "tool_choice" else '{"name": ...}'
    words = '"none", "auto", "required"' if field_name == "tool_choice" else '"none", "auto"'
    raise serializers.ValidationError({field_name: f"must be {words} or {shape}."})


def validate_tools(attrs: dict[str, Any]) -> ToolPlan | None:
    """Check tools/functions and tool_choice/function_call together; None when no tool may be called."""
    if attrs.get("tools") and attrs.get("functions"):
        raise serializers.ValidationError({"functions": "cannot be combined with tools (functions is the older name)."})
    legacy = bool(attrs.get("functions")) or (attrs.get("function_call") is not None and not attrs.get("tools"))
    field_name, choice_field = ("functions", "function_call") if legacy else ("tools", "tool_choice")
    raw = attrs.get(field_name) or []
    if not isinstance(raw, list):
        raise serializers.ValidationError({field_name: "must be an array."})
    tools: list[Tool] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        s = FunctionSerializer(data=item) if legacy else ToolSerializer(data=item)
        if not s.is_valid():
            raise serializers.ValidationError({field_name: {i: s.errors}})
        fn = s.validated_data if legacy else s.validated_data["function"]
        prefix = f"{field_name}[{i}]" + ("" if legacy else ".function")
        if fn["name"] in seen:
            msg = f"duplicate function name '{fn['name']}'."
            raise serializers.ValidationError({field_name: {i: {"name": msg} if legacy else {"function": {"name": msg}}}})
        seen.add(fn["name"])
        tools.append(Tool(fn["name"], fn.get("description") or "", fn.get("parameters") or EMPTY_PARAMETERS, f"{prefix}.parameters"))
    choice_value = attrs.get(choice_field)
    choice = "auto" if choice_value is None else _choice_name(choice_value, choice_field)
    if choice not in ("none", "auto", "required") and choice not in seen:
        raise serializers.ValidationError({choice_field: f"names the function '{choice}', which is not in {field_name}."})
    if choice == "required" and not tools:
        raise serializers.ValidationError({choice_field: f"is 'required' but no {field_name} are given."})
    if not tools or choice == "none":
        return None
    parallel = attrs.get("parallel_tool_calls")
    # A named function is called once; otherwise parallel_tool_calls allows several.
    several = parallel is not False and not legacy and choice in ("auto", "required")
    return ToolPlan(tuple(tools), choice, several, legacy)


def parameter_specs(plan: ToolPlan) -> list[GrammarSpec]:
    """Each tool's schema on its own, so a bad one is a 400 naming it."""
    return [json_schema_spec(t.parameters, param=t.param) for t in plan.tools]


# ------------------------------------------------------------------------------ prompt
def generic_instructions(plan: ToolPlan) -> str:
    lines = ["You can call these functions:"]
    lines += [json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters}, ensure_ascii=False) for t in plan.tools]
    lines.append(
        "To call a function, answer with a block like this, and nothing else:\n"
        f'{OPEN}{{"name": "<function name>", "arguments": {{<arguments as JSON>}}}}{CLOSE}'
    )
    if plan.parallel:
        lines.append("To call several functions, write one block per call, one after another.")
    if plan.choice == "required":
        lines.append("You must call at least one function.")
    elif plan.choice != "auto":
        lines.append(f"You must call the function {plan.choice}.")
    else:
        lines.append("If no function is needed, answer the user directly.")
    return "\n".join(lines)


def _call_block(name: str, arguments: Any) -> str:
    return OPEN + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + CLOSE


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def render_messages(messages: list[dict[str, Any]], plan: ToolPlan | None, *, template_tools: bool) -> list[dict[str, Any]]:
    """The conversation as the chat template gets it (see the module docstring)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        calls = m.get("tool_calls") or []
        if template_tools:
            msg: dict[str, Any] = {"role": m["role"], "content": m["content"]}
            if calls:
                msg["tool_calls"] = [
                    {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": _arguments(c["arguments"])}}
                    for c in calls
                ]
            if m["role"] == "tool":
                msg["tool_call_id"] = m.get("tool_call_id", "")
            out.append(msg)
        elif calls:
            blocks = "\n".join(_call_block(c["name"], _arguments(c["arguments"])) for c in calls)
            out.append({"role": "assistant", "content": (m["content"] + "\n" if m["content"] else "") + blocks})
        elif m["role"] == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{m['content']}\n</tool_response>"})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    if plan is not None and not template_tools:
        text = generic_instructions(plan)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + text}
        else:
            out.insert(0, {"role": "system", "content": text})
    return out


# ----------------------------------------------------------------------------- grammar
def grammar(plan: ToolPlan, text_schema: dict[str, Any] | None) -> GrammarSpec:
    """The Lark grammar of an answer; ``text_schema`` (response_format) shapes a text reply."""
    tools = [t for t in plan.tools if plan.choice in ("auto", "required", t.name)]
    rules = [
        f"call_{i}: {lark_string(OPEN + json.dumps({'name': t.name})[:-1] + ', ' + ARGUMENTS)} "
        f"{lark_json(t.parameters)} {lark_string('}' + CLOSE)}"
        for i, t in enumerate(tools)
    ]
    rules.append("call: " + " | ".join(f"call_{i}" for i in range(len(tools))))
    rules.append('calls: call ("\\n" call)*' if plan.parallel else "calls: call")
    if plan.choice == "auto":
        if text_schema is not None:
            rules.append(f"text: {lark_json(text_schema)}")
        else:
            rules.append("text: TEXT\nTEXT: /(?s:.+)/ & ~/(?s:\\s*<tool_call>.*)/")
        rules.insert(0, "start: text | calls")
    else:
        rules.insert(0, "start: calls")
    return GrammarSpec("lark", "\n".join(rules), param="tools")


# ------------------------------------------------------------------------------ answer
def _call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def parse_calls(text: str) -> list[dict[str, Any]] | None:
    """The calls of a finished answer in OpenAI's shape, or None when it is a text reply."""
    body = text.strip()
    if not body.startswith(OPEN.strip()):
        return None
    calls = []
    for block in body.split(CLOSE):
        block = block.strip()
        if not block:
            continue
        if not block.startswith(OPEN):
            return None
        try:
            obj = json.loads(block[len(OPEN):])
        except ValueError:
            return None
        if not isinstance(obj, dict) or "name" not in obj:
            return None
        args = json.dumps(obj.get("arguments", {}), ensure_ascii=False)
        calls.append({"id": _call_id(), "type": "function", "function": {"name": obj["name"], "arguments": args}})
    return calls or None


def message(plan: ToolPlan, text: str, finish_reason: str | None) -> tuple[dict[str, Any], str | None]:
    """The assistant message and finish reason for a finished answer."""
    calls = parse_calls(text) if finish_reason == "stop" else None
    if not calls:
        return {"role": "assistant", "content": text, "refusal": None}, finish_reason
    if plan.legacy:
        return {"role": "assistant", "content": None, "refusal": None, "function_call": calls[0]["function"]}, "function_call"
    return {"role": "assistant", "content": None, "refusal": None, "tool_calls": calls}, "tool_calls"


@dataclass
class DeltaStream:
    """Turns one choice's streamed text into OpenAI chat deltas.

    Text that could still be the start of ``<tool_call>`` is held back until it is
    known; a call's first delta carries ``index``, ``id``, ``type`` and the name, then
    its ``arguments`` follow in fragments (the closing ``}`` + tag held back).
    """

    legacy: bool = False
    buf: str = ""
    pos: int = 0  # how much of buf has been turned into deltas
    mode: str = "undecided"  # undecided | text | calls
    calls: int = 0
    in_call: bool = False
    _pending: list[dict[str, Any]] = field(default_factory=list)

    def feed(self, text: str, *, final: bool = False) -> list[dict[str, Any]]:
        self.buf += text
        out: list[dict[str, Any]] = []
        if self.mode == "undecided":
            head = self.buf.lstrip()
            if head.startswith(OPEN.strip()):
                self.mode = "calls"
            elif not OPEN.strip().startswith(head) or final:
                self.mode = "text"
        if self.mode == "text":
            if self.pos < len(self.buf):
                out.append({"content": self.buf[self.pos:]})
                self.pos = len(self.buf)
        elif self.mode == "calls":
            out += self._calls(final)
        return out

    def _calls(self, final: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            if not self.in_call:
                start = self.buf.find(OPEN, self.pos)
                head_end = self.buf.find(ARGUMENTS, start) if start >= 0 else -1
                if head_end < 0:
                    return out
                try:
                    name = json.loads(self.buf[start + len(OPEN):head_end].rstrip(", ") + "}")["name"]
                except (ValueError, KeyError):
                    return out
                self.pos = head_end + len(ARGUMENTS)
                self.in_call = True
                first = {"name": name, "arguments": ""}
                if self.legacy:
                    out.append({"function_call": first})
                else:
                    out.append({"tool_calls": [{"index": self.calls, "id": _call_id(), "type": "function", "function": first}]})
            end = self.buf.find("}" + CLOSE, self.pos)
            stop = end if end >= 0 else (len(self.buf) if final else max(self.pos, len(self.buf) - len("}" + CLOSE)))
            if stop > self.pos:
                out.append(self._args(self.buf[self.pos:stop]))
                self.pos = stop
            if end < 0:
                return out
            self.pos = end + len("}" + CLOSE)
            self.in_call = False
            self.calls += 1

    def _args(self, fragment: str) -> dict[str, Any]:
        if self.legacy:
            return {"function_call": {"arguments": fragment}}
        return {"tool_calls": [{"index": self.calls, "function": {"arguments": fragment}}]}

    def finish_reason(self, reason: str | None) -> str | None:
        if reason == "stop" and self.mode == "calls" and self.calls:
            return "function_call" if self.legacy else "tool_calls"
        return reason
