"""The Response object and its event stream.

:class:`OutputWriter` turns one sequence's engine deltas into Responses output items
(a ``message`` with one ``output_text`` part, or ``function_call`` items) and the
events a stream sends for them, in OpenAI's order: ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta``...,
``response.output_text.done``, ``response.content_part.done``,
``response.output_item.done``; a call is ``output_item.added``,
``function_call_arguments.delta``/``.done``, ``output_item.done``. A plain answer is
the same writer's items without the events, so both always agree.

With tools, text is held until it is known to be a call or a reply
(:class:`completions.tools.DeltaStream`); a call is sent once it is complete; an exact
repeat of an earlier call ends the turn.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from completions.tools import DeltaStream, ToolPlan
from inference.types import SequenceDelta, TokenLogprob
from responses.items import new_id


def delta_logprobs(entries: tuple[TokenLogprob, ...] | list[TokenLogprob]) -> list[dict[str, Any]]:
    return [{"token": lp.token, "logprob": lp.logprob,
             "top_logprobs": [{"token": alt.token, "logprob": alt.logprob} for alt in lp.top]} for lp in entries]


def part_logprobs(entries: list[TokenLogprob]) -> list[dict[str, Any]]:
    return [{"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.bytes),
             "top_logprobs": [{"token": a.token, "logprob": a.logprob, "bytes": list(a.bytes)} for a in lp.top]}
            for lp in entries]


def event_frame(event: dict[str, Any]) -> bytes:
    """One SSE frame: ``event: <type>`` and the JSON, as OpenAI sends them."""
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


@dataclass
class OutputWriter:
    tools: ToolPlan | None
    logprobs: bool
    max_tool_calls: int | None = None
    output: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)  # events not yet taken
    ended: bool = False  # the turn is over before the engine's end (a repeat, or max_tool_calls)
    _calls: DeltaStream | None = None
    _message: dict[str, Any] | None = None
    _text: str = ""
    _all_logprobs: list[TokenLogprob] = field(default_factory=list)
    _unsent_logprobs: list[TokenLogprob] = field(default_factory=list)
    _call_head: dict[str, Any] | None = None
    _call_count: int = 0

    def __post_init__(self) -> None:
        if self.tools is not None:
            self._calls = DeltaStream()

    # ------------------------------------------------------------------ events
    def _emit(self, kind: str, **fields: Any) -> None:
        self.pending.append({"type": kind, **fields})

    def take(self) -> list[dict[str, Any]]:
        out, self.pending = self.pending, []
        return out

    # ------------------------------------------------------------------ deltas
    def feed(self, delta: SequenceDelta) -> None:
        """One engine delta of the sequence."""
        if self.ended:
            return
        if self.logprobs and delta.logprobs:
            self._all_logprobs.extend(delta.logprobs)
            self._unsent_logprobs.extend(delta.logprobs)
        final = delta.finish_reason is not None
        if self._calls is None:
            if delta.text:
                self._text_delta(delta.text)
            return
        for part in self._calls.feed(delta.text, final=final):
            if "content" in part:
                self._text_delta(part["content"])
            for call in part.get("tool_calls") or ():
                if "id" in call:
                    self._call_head = call
                else:
                    self._call(self._call_head, call["function"]["arguments"])
        if self._calls.ended:
            self.ended = True

    def _text_delta(self, text: str) -> None:
        if self._message is None:
            self._message = {"id": new_id("msg"), "type": "message", "status": "in_progress", "role": "assistant",
                             "content": []}
            self.output.append(self._message)
            index = len(self.output) - 1
            self._emit("response.output_item.added", output_index=index, item=copy.deepcopy(self._message))
            self._emit("response.content_part.added", item_id=self._message["id"], output_index=index,
                       content_index=0, part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})
        self._text += text
        lps, self._unsent_logprobs = self._unsent_logprobs, []
        self._emit("response.output_text.delta", item_id=self._message["id"], output_index=self._index(self._message),
                   content_index=0, delta=text, logprobs=delta_logprobs(lps))

    def _call(self, head: dict[str, Any] | None, arguments: str) -> None:
        if head is None:
            return
        if self.max_tool_calls is not None and self._call_count >= self.max_tool_calls:
            self.ended = True
            return
        self._call_count += 1
        item = {"id": new_id("fc"), "type": "function_call", "status": "in_progress", "arguments": "",
                "call_id": head["id"], "name": head["function"]["name"]}
        self.output.append(item)
        index = len(self.output) - 1
        self._emit("response.output_item.added", output_index=index, item=copy.deepcopy(item))
        self._emit("response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=arguments)
        self._emit("response.function_call_arguments.done", item_id=item["id"], name=item["name"],
                   output_index=index, arguments=arguments)
        item["arguments"], item["status"] = arguments, "completed"
        self._emit("response.output_item.done", output_index=index, item=copy.deepcopy(item))
        self._call_head = None

    def _index(self, item: dict[str, Any]) -> int:
        return next(i for i, it in enumerate(self.output) if it is item)

    # ------------------------------------------------------------------ the end
    def finish(self, status: str) -> None:
        """Close the open message (an answer with no output at all gets an empty one)."""
        if self._message is None and not self.output:
            self._text_delta("")
            self.pending = [e for e in self.pending if e["type"] != "response.output_text.delta"]
        if self._message is None:
            return
        message, index = self._message, self._index(self._message)
        logprobs = part_logprobs(self._all_logprobs) if self.logprobs else []
        part = {"type": "output_text", "text": self._text, "annotations": [], "logprobs": logprobs}
        self._emit("response.output_text.done", item_id=message["id"], output_index=index, content_index=0,
                   text=self._text, logprobs=delta_logprobs(self._all_logprobs) if self.logprobs else [])
        self._emit("response.content_part.done", item_id=message["id"], output_index=index, content_index=0,
                   part=copy.deepcopy(part))
        message["content"] = [part]
        message["status"] = "incomplete" if status == "incomplete" else "completed"
        self._emit("response.output_item.done", output_index=index, item=copy.deepcopy(message))
        self._message = None

    @property
    def has_calls(self) -> bool:
        return self._call_count > 0
