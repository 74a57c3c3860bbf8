"""/v1/chat/completions: messages (and tools) rendered with the model's chat template;
choices are messages, chunks are deltas, and with tools the text becomes tool calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from completions import structured, tools
from completions.engine_io import SequenceResult
from completions.serializers import ChatCompletionRequestSerializer
from completions.serving import (
    ChoiceStream,
    Plan,
    Serving,
    cap,
    check_context,
    compile_grammar,
    default_length,
    sampling_params,
    stream_fields,
)
from core.errors import APIError, invalid_value
from core.usage import Usage
from inference.errors import InvalidInput
from inference.types import SequenceDelta, TokenLogprob
from models_api.engine import aload_model
from models_api.models import ModelEntry
from models_api.selectors import sampling_defaults

if TYPE_CHECKING:
    from inference.constraints import Grammar
    from inference.generator import TextGenerator


def require_chat(entry: ModelEntry) -> None:
    if not entry.is_chat:
        raise APIError(
            400,
            f"The model '{entry.model_id}' is not a chat model (it has no chat template); use /v1/completions.",
            param="model",
        )


def require_template(generator: Any, entry: ModelEntry) -> None:
    if not getattr(generator, "has_chat_template", False):
        raise APIError(
            400,
            f"The model '{entry.model_id}' has no chat template; "
            "use /v1/completions or set a template in the registry.",
            param="model",
        )


def render_prompt(generator: TextGenerator, data: dict[str, Any], *, add_generation_prompt: bool = True) -> list[int]:
    """The token ids of a chat request's prompt: its messages (tool calls and results
    written as the tool prompt says) through the model's template, with the tools where
    the template takes them. CPU work: call it off the event loop."""
    plan_tools: tools.ToolPlan | None = data.get("tool_plan")
    take_tools = generator.template_takes_tools
    messages = tools.render_messages(data["messages"], plan_tools, template_tools=take_tools)
    try:
        return generator.render_chat(
            messages,
            tools=[t.openai() for t in plan_tools.tools] if plan_tools and take_tools else None,
            add_generation_prompt=add_generation_prompt,
        )
    except InvalidInput as exc:
        raise invalid_value("messages", str(exc)) from None


async def chat_grammar(generator: TextGenerator, data: dict[str, Any]) -> Grammar | None:
    """response_format / structured_outputs, or with tools the grammar of calls (whose
    text branch follows response_format); each schema is checked on its own first so
    an error names it."""
    own = await compile_grammar(generator, structured.grammar_spec(data))
    plan = data.get("tool_plan")
    if plan is None:
        return own
    for spec in tools.parameter_specs(plan):
        await compile_grammar(generator, spec)
    return await compile_grammar(generator, tools.grammar(plan, structured.response_schema(data)))


def chat_logprobs(entries: list[TokenLogprob]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": list(lp.bytes),
                "top_logprobs": [
                    {"token": alt.token, "logprob": alt.logprob, "bytes": list(alt.bytes)} for alt in lp.top
                ],
            }
            for lp in entries
        ],
        "refusal": None,
    }


class ChatServing(Serving):
    object = "chat.completion"
    chunk_object = "chat.completion.chunk"
    id_prefix = "chatcmpl"
    prompt_param = "messages"
    upstream_path = "/chat/completions"
    serializer_class = ChatCompletionRequestSerializer

    async def plan(self, data: dict[str, Any], entry: ModelEntry, used: Usage) -> Plan:
        require_chat(entry)
        n = cap(data.get("n") or 1, "n")
        generator = await aload_model(entry)
        require_template(generator, entry)
        ids = await asyncio.to_thread(render_prompt, generator, data)  # off the event loop
        window = generator.context_length
        requested = data.get("max_completion_tokens") or data.get("max_tokens")
        check_context(window, len(ids), max(requested or 1, 1), "messages")
        defaults = sampling_defaults(entry)
        left = window - len(ids)
        max_tokens = requested if requested is not None else default_length(defaults, left, left)
        check_context(window, len(ids), max_tokens, "messages")
        logprobs = (data.get("top_logprobs") or 0) if data.get("logprobs") else None
        return Plan(
            entry=entry,
            generator=generator,
            prompts=[ids],
            sampling=sampling_params(data, max_tokens=max_tokens, logprobs=logprobs, defaults=defaults),
            n=n,
            samples=n,
            logprobs=logprobs,
            used=used,
            grammar=await chat_grammar(generator, data),
            tools=data.get("tool_plan"),
            id=self.new_id(),
            **stream_fields(data),
        )

    def check_upstream(self, data: dict[str, Any], entry: ModelEntry) -> None:
        require_chat(entry)
        super().check_upstream(data, entry)

    def choice(self, plan: Plan, index: int, result: SequenceResult, echo: Any) -> dict[str, Any]:
        message, finish = {"role": "assistant", "content": result.text, "refusal": None}, result.finish_reason
        if plan.tools is not None:
            message, finish = tools.message(plan.tools, result.text, result.finish_reason)
        return {
            "index": index,
            "message": message,
            "logprobs": chat_logprobs(result.logprobs) if plan.logprobs is not None else None,
            "finish_reason": finish,
        }

    def opening_chunks(self, plan: Plan, echo: Any) -> Iterator[tuple[int, dict[str, Any], str | None]]:
        for index in range(plan.choices):
            yield index, {"delta": {"role": "assistant", "content": "", "refusal": None}, "logprobs": None}, None

    def new_choice_stream(self, plan: Plan, index: int, echo: Any) -> ChoiceStream:
        state = ChoiceStream(index)
        if plan.tools is not None:
            state.calls = tools.DeltaStream(legacy=plan.tools.legacy)
        return state

    def delta_chunks(self, plan: Plan, state: ChoiceStream,
                     delta: SequenceDelta) -> list[tuple[dict[str, Any], str | None]]:
        logprobs = chat_logprobs(list(delta.logprobs)) if plan.logprobs is not None and delta.logprobs else None
        if state.calls is None:
            body = {"delta": {"content": delta.text}} if delta.text or delta.finish_reason is None else {"delta": {}}
            return [(body | {"logprobs": logprobs}, delta.finish_reason)]
        # Tool calls: text is held until it is known to be a call (sent whole) or content.
        final = delta.finish_reason is not None
        parts = state.calls.feed(delta.text, final=final)
        final = final or state.calls.ended
        parts = parts or ([{}] if logprobs or final else [])
        out = []
        for j, part in enumerate(parts):
            finish = state.calls.finish_reason(delta.finish_reason) if j == len(parts) - 1 else None
            out.append(({"delta": part, "logprobs": logprobs if j == 0 else None}, finish))
        if state.calls.ended:
            state.done = state.ended_early = True
        return out


chat = ChatServing()
