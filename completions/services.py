"""Turn validated /v1/completions and /v1/chat/completions requests into engine calls,
and the engine's deltas into OpenAI's response and stream shapes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from django.conf import settings

from completions import engine_io, structured, tools
from completions.engine_io import PrimedStream, SequenceResult
from observability import metrics
from core.errors import APIError, error_payload, from_engine_error, invalid_value
from core.http import SSE_DONE, sse_frame
from inference.constraints import GrammarSpec
from inference.errors import InvalidInput
from inference.types import GenerationRequest, SamplingParams, TokenLogprob
from models_api.engine import aload_model
from models_api.models import ModelEntry
from models_api.selectors import sampling_defaults

if TYPE_CHECKING:  # the engine pulls in torch: import it only where a model is used
    from inference.constraints import Grammar
    from inference.generator import TextGenerator

SYSTEM_FINGERPRINT = "fp_gpt3dev"


@dataclass
class Plan:
    """One validated request, ready for the engine."""

    kind: str  # "text_completion" | "chat.completion"
    entry: ModelEntry
    generator: TextGenerator
    prompts: list[list[int]]
    sampling: SamplingParams
    n: int  # choices returned per prompt
    samples: int  # sequences generated per prompt (best_of >= n)
    stream: bool
    include_usage: bool
    logprobs: int | None  # what the client asked for (completions: 0..5; chat: top_logprobs)
    echo: bool = False
    grammar: Grammar | None = None  # every sequence's output must match it
    tools: tools.ToolPlan | None = None  # answers may be tool calls
    continuous_usage: bool = False  # stream_options.continuous_usage_stats: usage on every chunk
    prompt_texts: list[str | None] = field(default_factory=list)  # as sent, for echo (None: token ids)
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        if not self.id:
            prefix = "cmpl" if self.kind == "text_completion" else "chatcmpl"
            self.id = f"{prefix}-{uuid.uuid4().hex}"


def _cap(value: int, name: str) -> int:
    cap = settings.GPT3DEV["MAX_N"]
    if value > cap:
        raise invalid_value(name, f"must be at most {cap} on this server, got {value}.")
    return value


def _sampling(
    data: dict[str, Any], *, max_tokens: int, logprobs: int | None, defaults: Mapping[str, Any]
) -> SamplingParams:
    """The request's sampling: each field as sent, else the registry row's default
    (``defaults``, see models_api.selectors.sampling_defaults), else OpenAI's. Only a
    field left out (or null) falls through: ``temperature: 0`` stays greedy and
    ``stop: []`` means no stop strings."""

    def value(name: str, default: Any) -> Any:
        got = data.get(name)
        if got is None:
            got = defaults.get(name)
        return default if got is None else got

    top_k = value("top_k", 0)
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=value("temperature", 1.0),
        top_p=value("top_p", 1.0),
        top_k=0 if top_k < 0 else top_k,
        min_p=value("min_p", 0.0),
        presence_penalty=value("presence_penalty", 0.0),
        frequency_penalty=value("frequency_penalty", 0.0),
        repetition_penalty=value("repetition_penalty", 1.0),
        logit_bias=value("logit_bias", ()),
        seed=data.get("seed"),
        stop=tuple(value("stop", ())),
        logprobs=logprobs,
        min_tokens=value("min_tokens", 0),
        ignore_eos=bool(data.get("ignore_eos")),
        stop_token_ids=tuple(dict.fromkeys(value("stop_token_ids", ()))),
        include_stop_str_in_output=bool(data.get("include_stop_str_in_output")),
        skip_special_tokens=value("skip_special_tokens", True),
    )


def _default_length(defaults: Mapping[str, Any], left: int, fallback: int) -> int:
    """max_tokens for a request that gives none: the row's default, cut to what is left
    of the window (a default never turns a request into a 400), else ``fallback``."""
    if defaults.get("max_tokens") is None:
        return fallback
    return max(1, min(int(defaults["max_tokens"]), left))


async def _compile(generator: TextGenerator, spec: GrammarSpec | None) -> Grammar | None:
    """Compile a request's grammar when it arrives (cached by the schema's hash)."""
    if spec is None:
        return None
    try:
        return await generator.compile_grammar(spec, timeout_s=settings.GPT3DEV["GRAMMAR_COMPILE_TIMEOUT"])
    except InvalidInput as exc:
        raise from_engine_error(exc) from None


async def _chat_grammar(generator: TextGenerator, data: dict[str, Any]) -> Grammar | None:
    """response_format / structured_outputs, or with tools the grammar of calls (whose
    text branch follows response_format); each schema is checked on its own first so
    an error names it."""
    own = await _compile(generator, structured.grammar_spec(data))
    plan = data.get("tool_plan")
    if plan is None:
        return own
    for spec in tools.parameter_specs(plan):
        await _compile(generator, spec)
    return await _compile(generator, tools.grammar(plan, structured.response_schema(data)))


def _prompt_ids(generator: TextGenerator, prompt: str | list[int]) -> list[int]:
    return generator.encode(prompt) if isinstance(prompt, str) else list(prompt)


def _context_error(window: int, prompt_len: int, max_tokens: int, param: str) -> APIError:
    return APIError(
        400,
        f"This model's maximum context length is {window} tokens. However, you requested "
        f"{prompt_len + max_tokens} tokens ({prompt_len} in the prompt, {max_tokens} for the completion). "
        "Please reduce the length of the prompt or the completion.",
        param=param,
        code="context_length_exceeded",
    )


async def plan_completion(data: dict[str, Any], entry: ModelEntry) -> Plan:
    n = _cap(data.get("n") or 1, "n")
    samples = _cap(data.get("best_of") or n, "best_of")
    generator = await aload_model(entry)
    # Tokenising is CPU work that grows with the request: off the event loop.
    prompts = await asyncio.to_thread(lambda: [_prompt_ids(generator, p) for p in data["prompt"]])
    defaults = sampling_defaults(entry)
    max_tokens = data.get("max_tokens")
    if max_tokens is None:  # the row's default, cut to the window; else OpenAI's 16
        longest = max(len(ids) for ids in prompts)
        max_tokens = _default_length(defaults, generator.context_length - longest, 16)
    for ids in prompts:
        if len(ids) + max_tokens > generator.context_length:
            raise _context_error(generator.context_length, len(ids), max_tokens, "prompt")
    asked = data.get("logprobs")
    # best_of ranks by mean logprob, so the engine computes them even when not shown
    engine_logprobs = asked if asked is not None else (0 if samples > n else None)
    echo = bool(data.get("echo"))
    sampling = _sampling(data, max_tokens=max_tokens, logprobs=engine_logprobs, defaults=defaults)
    if echo and asked is not None:  # the prompt's own logprobs, from the request's prefill
        sampling = replace(sampling, prompt_logprobs=asked)
    return Plan(
        kind="text_completion",
        entry=entry,
        generator=generator,
        prompts=prompts,
        sampling=sampling,
        n=n,
        samples=samples,
        logprobs=asked,
        echo=echo,
        grammar=await _compile(generator, structured.grammar_spec(data)),
        prompt_texts=[p if isinstance(p, str) else None for p in data["prompt"]],
        **_stream_fields(data),
    )


def require_chat(entry: ModelEntry) -> None:
    if not entry.is_chat:
        raise APIError(
            400,
            f"The model '{entry.model_id}' is not a chat model (it has no chat template); use /v1/completions.",
            param="model",
        )


def cap_samples(data: dict[str, Any]) -> None:
    """``n`` and ``best_of`` within MAX_N (a 400 naming the field)."""
    for name in ("n", "best_of"):
        if data.get(name):
            _cap(data[name], name)


async def plan_chat(data: dict[str, Any], entry: ModelEntry) -> Plan:
    require_chat(entry)
    n = _cap(data.get("n") or 1, "n")
    generator = await aload_model(entry)
    if not generator.has_chat_template:
        raise APIError(
            400,
            f"The model '{entry.model_id}' has no chat template; use /v1/completions or set a template in the registry.",
            param="model",
        )
    plan_tools: tools.ToolPlan | None = data.get("tool_plan")
    take_tools = generator.template_takes_tools
    messages = tools.render_messages(data["messages"], plan_tools, template_tools=take_tools)
    try:
        ids = await asyncio.to_thread(  # off the event loop
            generator.render_chat, messages,
            tools=[t.openai() for t in plan_tools.tools] if plan_tools and take_tools else None,
        )
    except InvalidInput as exc:
        raise invalid_value("messages", str(exc)) from None
    window = generator.context_length
    requested = data.get("max_completion_tokens") or data.get("max_tokens")
    if len(ids) >= window:
        raise _context_error(window, len(ids), requested or 1, "messages")
    defaults = sampling_defaults(entry)
    left = window - len(ids)
    max_tokens = requested if requested is not None else _default_length(defaults, left, left)
    if len(ids) + max_tokens > window:
        raise _context_error(window, len(ids), max_tokens, "messages")
    logprobs = (data.get("top_logprobs") or 0) if data.get("logprobs") else None
    return Plan(
        kind="chat.completion",
        entry=entry,
        generator=generator,
        prompts=[ids],
        sampling=_sampling(data, max_tokens=max_tokens, logprobs=logprobs, defaults=defaults),
        n=n,
        samples=n,
        logprobs=logprobs,
        grammar=await _chat_grammar(generator, data),
        tools=plan_tools,
        **_stream_fields(data),
    )


def _stream_fields(data: dict[str, Any]) -> dict[str, bool]:
    """``stream_options.continuous_usage_stats`` (vLLM's) puts the usage so far on every
    chunk; it implies ``include_usage``, so the last chunk carries the final usage."""
    options = data.get("stream_options") or {}
    continuous = bool(options.get("continuous_usage_stats"))
    return {
        "stream": bool(data.get("stream")),
        "include_usage": continuous or bool(options.get("include_usage")),
        "continuous_usage": continuous,
    }


async def _open(plan: Plan) -> list[PrimedStream]:
    requests = [
        GenerationRequest(
            request_id=f"{plan.id}-{key}",
            prompt_token_ids=tuple(ids),
            sampling=plan.sampling,
            n=plan.samples,
            grammar=plan.grammar,
        )
        for key, ids in enumerate(plan.prompts)
    ]
    try:
        return await engine_io.open_streams(plan.generator, requests)
    except APIError as exc:
        if plan.kind == "chat.completion" and exc.param == "prompt":
            exc.param = "messages"
        raise


def _header(plan: Plan, *, chunk: bool = False) -> dict[str, Any]:
    obj = plan.kind + (".chunk" if chunk and plan.kind == "chat.completion" else "")
    return {
        "id": plan.id,
        "object": obj,
        "created": plan.created,
        "model": plan.entry.model_id,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def _usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


# ----------------------------------------------------------------------------- logprobs
Scored = list[tuple[str, str, "TokenLogprob | None"]]  # (display token, text it adds, logprob)


def _text_completion_logprobs(entries: Scored, start_offset: int, into: dict[str, list] | None = None) -> dict[str, list]:
    """The completions shape: parallel lists, and each token's offset in the choice text.

    The offset advances by the text each token adds (see ``TokenLogprob.text``), so
    ``text[text_offset[i]:]`` starts with what token i writes: a special token writes
    nothing, and a token holding the first bytes of a character sits where that
    character begins (the token that completes it writes it whole, from the same offset)."""
    out = into if into is not None else {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    offset = start_offset
    for token, piece, lp in entries:
        out["tokens"].append(token)
        out["token_logprobs"].append(None if lp is None else lp.logprob)
        out["top_logprobs"].append(None if lp is None else {alt.token: alt.logprob for alt in lp.top})
        out["text_offset"].append(offset)
        offset += len(piece)
    return out


def _generated(logprobs: list[TokenLogprob] | tuple[TokenLogprob, ...]) -> Scored:
    return [(lp.token, lp.text, lp) for lp in logprobs]


def _chat_logprobs(entries: list[TokenLogprob]) -> dict[str, Any]:
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


def _prompt_pieces(plan: Plan, ids: list[int], sent: str | None) -> list[str]:
    """What each prompt token writes. A prompt sent as text is echoed as sent, special
    tokens written in it included; one the tokenizer added (a BOS) writes nothing."""
    skip = plan.sampling.skip_special_tokens
    pieces = plan.generator.token_pieces(ids, skip_special_tokens=skip)
    if sent is not None and "".join(pieces) != sent:
        alternative = plan.generator.token_pieces(ids, skip_special_tokens=not skip)
        if "".join(alternative) == sent:
            return alternative
    return pieces


def _reads_prompts(plan: Plan) -> bool:
    """Whether the engine has work: tokens to generate, or an echoed prompt to score."""
    return plan.sampling.max_tokens > 0 or plan.sampling.prompt_logprobs is not None


def _echo_parts(plan: Plan, streams: list[PrimedStream]) -> list[tuple[str, Scored]]:
    """Per prompt: its text (as sent; decoded when sent as token ids) and, when logprobs
    are asked for, its scored tokens: the engine scored them while reading the prompt
    (``prompt_logprobs``), and they came with the first delta of its stream."""
    scores = {stream.key: stream.first.prompt_logprobs for stream in streams}
    parts = []
    for key, ids in enumerate(plan.prompts):
        sent = plan.prompt_texts[key] if key < len(plan.prompt_texts) else None
        pieces = _prompt_pieces(plan, ids, sent)
        text = sent if sent is not None else "".join(pieces)
        scored: Scored = []
        if plan.logprobs is not None and ids:
            found = list(scores.get(key, ()))[1:]
            tokens = [plan.generator.token_text(ids[0])] + [lp.token for lp in found]
            scored = list(zip(tokens, pieces, [None, *found]))
        parts.append((text, scored))
    return parts


# ----------------------------------------------------------------------- non-streaming
async def run(plan: Plan) -> dict[str, Any]:
    timer = metrics.GenerationTimer(plan.entry.model_id, prompt_tokens=sum(len(ids) for ids in plan.prompts))
    streams = await _open(plan) if _reads_prompts(plan) else []
    echo = _echo_parts(plan, streams) if plan.echo else None
    if not streams:  # echo only: nothing to generate
        results = {(k, i): SequenceResult(finish_reason="length") for k in range(len(plan.prompts)) for i in range(plan.n)}
    else:
        if plan.sampling.max_tokens > 0:
            timer.first_token()
        ends_turn = tools.turn_ender(plan.tools) if plan.tools is not None else None
        results = await engine_io.collect(streams, plan.samples, on_tokens=timer.tokens, ends_turn=ends_turn)
    completion_tokens = sum(len(r.token_ids) for r in results.values())
    timer.done(completion_tokens)
    choices = []
    for key in range(len(plan.prompts)):
        sequences = [results[(key, i)] for i in range(plan.samples)]
        if plan.samples > plan.n:
            sequences = sorted(sequences, key=lambda r: r.mean_logprob, reverse=True)[: plan.n]
        for rank, result in enumerate(sequences):
            index = key * plan.n + rank
            choices.append(_choice(plan, index, result, echo[key] if echo else None))
    body = _header(plan) | {"choices": choices}
    cached = sum(max((r.cached_tokens for (k, _), r in results.items() if k == key), default=0)
                 for key in range(len(plan.prompts)))
    body["usage"] = _usage(sum(len(ids) for ids in plan.prompts), completion_tokens, cached)
    return body


def _choice(plan: Plan, index: int, result: SequenceResult, echo) -> dict[str, Any]:
    if plan.kind == "chat.completion":
        message, finish = {"role": "assistant", "content": result.text, "refusal": None}, result.finish_reason
        if plan.tools is not None:
            message, finish = tools.message(plan.tools, result.text, result.finish_reason)
        return {
            "index": index,
            "message": message,
            "logprobs": _chat_logprobs(result.logprobs) if plan.logprobs is not None else None,
            "finish_reason": finish,
        }
    prefix, prompt_scored = echo if echo else ("", [])
    logprobs = None
    if plan.logprobs is not None:
        logprobs = _text_completion_logprobs(prompt_scored, 0)
        _text_completion_logprobs(_generated(result.logprobs), len(prefix), into=logprobs)
    return {"text": prefix + result.text, "index": index, "logprobs": logprobs, "finish_reason": result.finish_reason}


# --------------------------------------------------------------------------- streaming
async def start_stream(plan: Plan) -> AsyncIterator[bytes]:
    """Open the engine streams now (so errors are HTTP statuses), then return the SSE body."""
    streams = await _open(plan) if _reads_prompts(plan) else []
    return _sse(plan, streams, _echo_parts(plan, streams) if plan.echo else None)


async def _sse(plan: Plan, streams: list[PrimedStream], echo) -> AsyncIterator[bytes]:
    chat = plan.kind == "chat.completion"
    prompt_tokens = sum(len(ids) for ids in plan.prompts)
    completion_tokens = 0
    timer = metrics.GenerationTimer(plan.entry.model_id, prompt_tokens=prompt_tokens)
    offsets: dict[int, int] = {}
    calls: dict[int, tools.DeltaStream] = {}
    cached: dict[int, int] = {}  # per prompt: tokens served from the prefix cache

    def chunk(index: int, body: dict, finish: str | None = None) -> bytes:
        usage: dict = {}
        if plan.include_usage:  # null until the last chunk, or the usage so far on every chunk
            so_far = _usage(prompt_tokens, completion_tokens, sum(cached.values()))
            usage = {"usage": so_far if plan.continuous_usage else None}
        choice = {"index": index} | body | {"finish_reason": finish}
        return sse_frame(_header(plan, chunk=True) | {"choices": [choice]} | usage)

    try:
        for key in range(len(plan.prompts)):
            for i in range(plan.n):
                index = key * plan.n + i
                if chat:
                    delta = {"role": "assistant", "content": "", "refusal": None}
                    yield chunk(index, {"delta": delta, "logprobs": None})
                elif echo:
                    text, scored = echo[key]
                    logprobs = _text_completion_logprobs(scored, 0) if plan.logprobs is not None else None
                    offsets[index] = len(text)
                    yield chunk(index, {"text": text, "logprobs": logprobs})
        if not streams:  # echo without logprobs, max_tokens 0
            for index in range(len(plan.prompts) * plan.n):
                yield chunk(index, {"text": "", "logprobs": None}, finish="length")
        done: set[int] = set()  # choices that have sent their finish_reason
        merged = engine_io.merge(streams)
        async for key, delta in merged:
            index = key * plan.n + delta.index
            if index in done:  # a repeated call ended its turn: the rest is dropped
                continue
            if delta.cached_tokens is not None:
                cached[key] = max(cached.get(key, 0), delta.cached_tokens)
            completion_tokens += len(delta.token_ids)
            timer.tokens(len(delta.token_ids))
            if delta.finish_reason is not None:
                done.add(index)
            if not delta.text and delta.finish_reason is None and not (delta.logprobs and plan.logprobs is not None):
                continue
            logprobs = None
            if plan.logprobs is not None and delta.logprobs:
                if chat:
                    logprobs = _chat_logprobs(list(delta.logprobs))
                else:
                    logprobs = _text_completion_logprobs(_generated(delta.logprobs), offsets.get(index, 0))
                    offsets[index] = offsets.get(index, 0) + sum(len(lp.text) for lp in delta.logprobs)
            if plan.tools is not None:
                stream = calls.setdefault(index, tools.DeltaStream(legacy=plan.tools.legacy))
                parts = stream.feed(delta.text, final=delta.finish_reason is not None)
                final = delta.finish_reason is not None or stream.ended
                parts = parts or ([{}] if logprobs or final else [])
                for j, part in enumerate(parts):
                    last = j == len(parts) - 1
                    finish = stream.finish_reason(delta.finish_reason) if last else None
                    yield chunk(index, {"delta": part, "logprobs": logprobs if j == 0 else None}, finish=finish)
                if stream.ended:
                    done.add(index)
                    if len(done) == len(plan.prompts) * plan.n:
                        await merged.aclose()  # cancels the request: its rows leave the batch
                        break
                continue
            body = {"delta": {"content": delta.text}} if chat else {"text": delta.text}
            if chat and delta.finish_reason is not None and not delta.text:
                body = {"delta": {}}
            yield chunk(index, body | {"logprobs": logprobs}, finish=delta.finish_reason)
        timer.done()
        if plan.include_usage:
            usage = _usage(prompt_tokens, completion_tokens, sum(cached.values()))
            yield sse_frame(_header(plan, chunk=True) | {"choices": [], "usage": usage})
    except asyncio.CancelledError:
        raise  # the client went away: merge() has cancelled the requests
    except Exception as exc:  # after the first byte, an error is a frame, then [DONE]
        error = engine_io.engine_failure(exc)
        yield sse_frame(error_payload(error.message, type=error.type, param=error.param, code=error.code))
    yield SSE_DONE
