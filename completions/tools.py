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
- Answer: the complete calls, never the format's markup. An exact repeat of a call
  made earlier in the same answer ends the turn and is dropped (small models otherwise
  repeat a call until ``max_tokens``); a call cut by ``max_tokens`` is left out. A stream
  sends each call once it is complete, so it shows the same calls as the plain answer.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from rest_framework import serializers

from completions.structured import NAME_RE
from core.fields import StrictCharField
from inference.constraints import GrammarSpec, json_schema_spec, lark_json, lark_string

OPEN, CLOSE = "<tool_call>\n", "\n</tool_call>"
ARGUMENTS = '"arguments": '
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


# ----------------------------------------------------------------------------- request
class FunctionSerializer(serializers.Serializer):
    name = serializers.RegexField(
        NAME_RE, error_messages={"invalid": "must be 1-64 letters, digits, underscores or dashes."})
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
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


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
            where = {"name": msg} if legacy else {"function": {"name": msg}}
            raise serializers.ValidationError({field_name: {i: where}})
        seen.add(fn["name"])
        parameters = fn.get("parameters") or EMPTY_PARAMETERS
        tools.append(Tool(fn["name"], fn.get("description") or "", parameters, f"{prefix}.parameters"))
    choice_value = attrs.get(choice_field)
    choice = "auto" if choice_value is None else _choice_name(choice_value, choice_field)
    if choice not in ("none", "auto", "required") and choice not in seen:
        raise serializers.ValidationError(
            {choice_field: f"names the function '{choice}', which is not in {field_name}."})
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
    lines += [json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters},
                         ensure_ascii=False) for t in plan.tools]
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


def render_messages(messages: list[dict[str, Any]], plan: ToolPlan | None, *,
                    template_tools: bool) -> list[dict[str, Any]]:
    """The conversation as the chat template gets it (see the module docstring)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        calls = m.get("tool_calls") or []
        if template_tools:
            msg: dict[str, Any] = {"role": m["role"], "content": m["content"]}
            if calls:
                msg["tool_calls"] = [
                    {"id": c["id"], "type": "function",
                     "function": {"name": c["name"], "arguments": _arguments(c["arguments"])}}
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
# A call as the grammar writes it; whitespace is let through so a hand-written history
# block parses too. Names are NAME_RE's, so the name needs no JSON unescaping.
_HEAD = re.compile(r'\s*<tool_call>\s*\{\s*"name"\s*:\s*"([A-Za-z0-9_-]{1,64})"\s*,\s*"arguments"\s*:\s*')
_TAIL = re.compile(r"\s*\}\s*</tool_call>")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class Call:
    """One complete call: its arguments are whole JSON followed by the object's ``}``
    (the grammar forces the rest of the closing markup, so a call cut inside that markup
    is complete too)."""

    name: str
    arguments: str  # the JSON as the model wrote it
    key: str  # name and arguments in one canonical string: equal keys, an exact repeat
    closed: bool  # its ``</tool_call>`` was written whole


def scan_calls(text: str, pos: int = 0) -> tuple[list[Call], int]:
    """The complete calls in ``text`` from ``pos``, and where the first call not yet
    closed starts (a rescan as more text arrives starts there).

    What follows the complete calls, if anything, is an unfinished call (still being
    streamed, or cut by ``max_tokens``) and is never part of the answer."""
    calls: list[Call] = []
    while True:
        head = _HEAD.match(text, pos)
        if head is None:
            return calls, pos
        try:
            value, end = _DECODER.raw_decode(text, head.end())
        except ValueError:  # the arguments are still being written (or were cut)
            return calls, pos
        tail = _TAIL.match(text, end)
        rest = text[end:].lstrip()
        if tail is None and not (rest.startswith("}") and "</tool_call>".startswith(rest[1:].lstrip())):
            return calls, pos  # not even the object's "}" yet
        name = head.group(1)
        key = json.dumps([name, value], sort_keys=True)
        calls.append(Call(name, text[head.end():end], key, closed=tail is not None))
        if tail is None:
            return calls, pos
        pos = tail.end()


def _until_repeat(calls: list[Call]) -> tuple[list[Call], bool]:
    """The calls before the first exact repeat of an earlier one, and whether one came."""
    seen: set[str] = set()
    for i, call in enumerate(calls):
        if call.key in seen:
            return calls[:i], True
        seen.add(call.key)
    return calls, False


def _call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _openai_call(call: Call) -> dict[str, Any]:
    return {"id": _call_id(), "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def is_call_answer(text: str) -> bool:
    return text.lstrip().startswith(OPEN.strip())


def parse_calls(text: str) -> list[dict[str, Any]] | None:
    """An answer's complete calls in OpenAI's shape, up to the first exact repeat (an
    unfinished last call is left out); None when it is a text reply."""
    if not is_call_answer(text):
        return None
    calls, _ = scan_calls(text)
    return [_openai_call(c) for c in _until_repeat(calls)[0]]


def message(plan: ToolPlan, text: str, finish_reason: str | None) -> tuple[dict[str, Any], str | None]:
    """The assistant message and finish reason for a finished answer.

    An answer of calls never shows the format's markup: its complete calls are the
    message's calls. A repeat of an earlier call ended the turn ("tool_calls"); an
    answer cut by ``max_tokens`` keeps "length", with the calls finished before the cut
    (none: ``content`` is null)."""
    if not is_call_answer(text):
        return {"role": "assistant", "content": text, "refusal": None}, finish_reason
    found, _ = scan_calls(text)
    calls, repeated = _until_repeat(found)
    if not calls:
        # under the grammar a call answer that stopped has a call; text that is not
        # in the format is shown as it is rather than hidden
        content = text if finish_reason == "stop" else None
        return {"role": "assistant", "content": content, "refusal": None}, finish_reason
    if repeated or finish_reason == "stop":
        finish_reason = "function_call" if plan.legacy else "tool_calls"
    answer: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    if plan.legacy:
        return answer | {"function_call": _openai_call(calls[0])["function"]}, finish_reason
    return answer | {"tool_calls": [_openai_call(c) for c in calls]}, finish_reason


def turn_ender(plan: ToolPlan) -> Callable[[Hashable, str], bool]:
    """For a plain answer: fed each sequence's text as it grows, True once an exact
    repeat of an earlier call has ended that sequence's turn (so generation can stop)."""
    streams: dict[Hashable, DeltaStream] = {}

    def ends_turn(sequence: Hashable, text: str) -> bool:
        stream = streams.setdefault(sequence, DeltaStream(legacy=plan.legacy))
        stream.feed(text)
        return stream.ended

    return ends_turn


@dataclass
class DeltaStream:
    """Turns one choice's streamed text into OpenAI chat deltas.

    Text that could still be the start of ``<tool_call>`` is held back until it is
    known. A call is held back until it is complete (see :class:`Call`), then sent as
    two deltas: the first carries ``index``, ``id``, ``type``, the name and empty
    ``arguments``, the second the whole arguments. So a stream shows the same calls as
    the plain answer: an exact repeat of an earlier call is never sent and ends the
    turn (``ended``: the caller stops reading), and a call cut by ``max_tokens`` is
    never begun.
    """

    legacy: bool = False
    buf: str = ""
    pos: int = 0  # where the first call not yet closed starts
    mode: str = "undecided"  # undecided | text | calls
    calls: int = 0  # calls sent
    ended: bool = False  # a repeat ended the turn
    _sent_open: bool = False  # the call at ``pos`` (closing markup unfinished) was sent
    _seen: set[str] = field(default_factory=set)

    def feed(self, text: str, *, final: bool = False) -> list[dict[str, Any]]:
        if self.ended:
            return []
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
            out += self._calls()
        return out

    def _calls(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        found, self.pos = scan_calls(self.buf, self.pos)
        for call in found[1 if self._sent_open else 0:]:
            if call.key in self._seen:
                self.ended = True
                return out
            self._seen.add(call.key)
            out += self._deltas(call)
            self.calls += 1
        self._sent_open = bool(found) and not found[-1].closed
        return out

    def _deltas(self, call: Call) -> list[dict[str, Any]]:
        if self.legacy:
            return [{"function_call": {"name": call.name, "arguments": ""}},
                    {"function_call": {"arguments": call.arguments}}]
        first = {"index": self.calls, "id": _call_id(), "type": "function",
                 "function": {"name": call.name, "arguments": ""}}
        rest = {"index": self.calls, "function": {"arguments": call.arguments}}
        return [{"tool_calls": [first]}, {"tool_calls": [rest]}]

    def finish_reason(self, reason: str | None) -> str | None:
        """The choice's finish reason: as for a plain answer (see :func:`message`)."""
        if self.mode == "calls" and self.calls and (self.ended or reason == "stop"):
            return "function_call" if self.legacy else "tool_calls"
        return reason
