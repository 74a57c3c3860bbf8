"""What /v1/completions and /v1/chat/completions share: a validated request becomes a
:class:`Plan` for the engine, is admitted against the key's limits, and is answered as
one JSON body (:meth:`Serving.run`) or as a stream of chunks (:meth:`Serving.stream`).

:mod:`completions.serving_chat` and :mod:`completions.serving_completion` say what
differs: how the prompt is built, and the shape of a choice and of a chunk. A row served
by another server goes through :meth:`Serving.forward` instead. Every path fills the
request's :class:`core.usage.Usage` with what it used.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from access.ratelimit import areserve_tokens
from completions import engine_io, tools
from completions.engine_io import PrimedStream, SequenceResult
from core.errors import APIError, error_payload, from_engine_error, invalid_value
from core.http import SSE_DONE, sse_frame
from core.usage import Usage
from inference.constraints import GrammarSpec
from inference.errors import InvalidInput, context_length_exceeded
from inference.types import GenerationRequest, SamplingParams, SequenceDelta
from models_api.models import ModelEntry
from observability.metrics import GenerationTimer
from upstream import budget, forward

if TYPE_CHECKING:  # the engine pulls in torch: import it only where a model is used
    from inference.constraints import Grammar
    from inference.generator import TextGenerator

SYSTEM_FINGERPRINT = "fp_gpt3dev"


@dataclass
class Plan:
    """One validated request, ready for the engine."""

    entry: ModelEntry
    generator: TextGenerator
    prompts: list[list[int]]
    sampling: SamplingParams
    n: int  # choices returned per prompt
    samples: int  # sequences generated per prompt (best_of >= n)
    stream: bool
    include_usage: bool
    logprobs: int | None  # what the client asked for (completions: 0..5; chat: top_logprobs)
    used: Usage  # the request's usage: what this plan reads and writes is counted there
    echo: bool = False
    grammar: Grammar | None = None  # every sequence's output must match it
    tools: tools.ToolPlan | None = None  # answers may be tool calls
    continuous_usage: bool = False  # stream_options.continuous_usage_stats: usage on every chunk
    prompt_texts: list[str | None] = field(default_factory=list)  # as sent, for echo (None: token ids)
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def prompt_tokens(self) -> int:
        return sum(len(ids) for ids in self.prompts)

    @property
    def choices(self) -> int:
        return len(self.prompts) * self.n


# ------------------------------------------------------------------ planning pieces
def cap(value: int, name: str) -> int:
    """``n`` or ``best_of`` within MAX_N (a 400 naming the field)."""
    limit = settings.GPT3DEV["MAX_N"]
    if value > limit:
        raise invalid_value(name, f"must be at most {limit} on this server, got {value}.")
    return value


def sampling_params(
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


def default_length(defaults: Mapping[str, Any], left: int, fallback: int) -> int:
    """max_tokens for a request that gives none: the row's default, cut to what is left
    of the window (a default never turns a request into a 400), else ``fallback``."""
    if defaults.get("max_tokens") is None:
        return fallback
    return max(1, min(int(defaults["max_tokens"]), left))


def check_context(window: int, prompt_len: int, max_tokens: int, param: str) -> None:
    """The context-length rule, with OpenAI's wording (the engine checks it again with
    the same words, for callers that skip this layer)."""
    if prompt_len + max_tokens > window:
        raise from_engine_error(context_length_exceeded(window, prompt_len, max_tokens, param=param))


async def compile_grammar(generator: TextGenerator, spec: GrammarSpec | None) -> Grammar | None:
    """Compile a request's grammar when it arrives (cached by the schema's hash)."""
    if spec is None:
        return None
    try:
        return await generator.compile_grammar(spec, timeout_s=settings.GPT3DEV["GRAMMAR_COMPILE_TIMEOUT"])
    except InvalidInput as exc:
        raise from_engine_error(exc) from None


def stream_fields(data: dict[str, Any]) -> dict[str, bool]:
    """``stream_options.continuous_usage_stats`` (vLLM's) puts the usage so far on every
    chunk; it implies ``include_usage``, so the last chunk carries the final usage."""
    options = data.get("stream_options") or {}
    continuous = bool(options.get("continuous_usage_stats"))
    return {
        "stream": bool(data.get("stream")),
        "include_usage": continuous or bool(options.get("include_usage")),
        "continuous_usage": continuous,
    }


def usage_body(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def cached_tokens(results: Mapping[tuple[int, int], SequenceResult], prompts: int) -> int:
    """Prompt tokens served from the prefix cache: per prompt, the most any of its
    sequences was served."""
    return sum(max((r.cached_tokens for (k, _), r in results.items() if k == key), default=0) for key in range(prompts))


async def open_plan(plan: Plan, *, param: str = "prompt") -> list[PrimedStream]:
    """Submit the plan's prompts to the engine at once; ``param`` is the request field an
    engine refusal of a prompt names."""
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
    return await engine_io.open_streams(plan.generator, requests, prompt_param=param)


# ----------------------------------------------------------------------------- serving
class Serving(ABC):
    """One OpenAI endpoint over the engine. Subclasses set the names and shapes."""

    object: str  # the answer's "object"
    chunk_object: str  # a stream chunk's "object"
    id_prefix: str
    prompt_param: str  # the request field that holds the prompt ("prompt" or "messages")
    upstream_path: str  # where an upstream row's server serves the same endpoint
    serializer_class: type  # the request's DRF serializer

    @abstractmethod
    async def plan(self, data: dict[str, Any], entry: ModelEntry, used: Usage) -> Plan:
        """The validated request read into a :class:`Plan` (prompt, sampling, grammar)."""

    @abstractmethod
    def choice(self, plan: Plan, index: int, result: SequenceResult, echo: Any) -> dict[str, Any]:
        """One finished sequence as a choice of the JSON answer."""

    def new_id(self) -> str:
        return f"{self.id_prefix}-{uuid.uuid4().hex}"

    # ------------------------------------------------------------------ admission
    async def admit(self, request: HttpRequest, plan: Plan) -> None:
        """Server caps and the key's tokens-per-minute: the prompt tokens plus max_tokens for
        every sequence are reserved now and settled to the real usage when the answer ends."""
        limit = settings.GPT3DEV["MAX_PROMPT_TOKENS"]
        if limit and plan.prompt_tokens > limit:
            raise APIError(
                400,
                f"The prompt has {plan.prompt_tokens} tokens; "
                f"this server accepts at most {limit} prompt tokens per request.",
                param=self.prompt_param,
                code="prompt_too_long",
            )
        reserve = plan.prompt_tokens + plan.sampling.max_tokens * plan.samples * len(plan.prompts)
        await areserve_tokens(request, reserve, param="max_tokens")

    def check_upstream(self, data: dict[str, Any], entry: ModelEntry) -> None:
        """Our own checks before an upstream row's server sees the request."""
        for name in ("n", "best_of"):
            if data.get(name):
                cap(data[name], name)

    async def forward(self, request: HttpRequest, data: dict[str, Any], entry: ModelEntry, used: Usage) -> HttpResponse:
        """An upstream model: our checks, its reservation (see upstream.budget), then its
        servers answer (see upstream.forward)."""
        self.check_upstream(data, entry)
        spend = budget.completion_budget(data, entry)
        await areserve_tokens(request, spend.tokens, param="max_tokens")
        body = budget.body_for_upstream(request.openai_body, spend)
        hops = forward.incoming_hops(request)
        if data.get("stream"):
            return await forward.completion_stream(entry, self.upstream_path, body, used, hops)
        return await forward.completion_json(entry, self.upstream_path, body, used, hops)

    # ------------------------------------------------------------------- answers
    def header(self, plan: Plan, *, chunk: bool = False) -> dict[str, Any]:
        return {
            "id": plan.id,
            "object": self.chunk_object if chunk else self.object,
            "created": plan.created,
            "model": plan.entry.model_id,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }

    def reads_prompts(self, plan: Plan) -> bool:
        """Whether the engine has work: tokens to generate, or an echoed prompt to score."""
        return plan.sampling.max_tokens > 0 or plan.sampling.prompt_logprobs is not None

    def echo_parts(self, plan: Plan, streams: list[PrimedStream]) -> Any:
        """What an echoing answer puts in front of each prompt's choices (None: no echo)."""
        return None

    async def open(self, plan: Plan) -> list[PrimedStream]:
        streams = await open_plan(plan, param=self.prompt_param) if self.reads_prompts(plan) else []
        plan.used.read(plan.entry.model_id, plan.prompt_tokens)
        return streams

    async def run(self, plan: Plan) -> dict[str, Any]:
        """The whole answer as one JSON body."""
        timer = GenerationTimer(plan.used)
        streams = await self.open(plan)
        echo = self.echo_parts(plan, streams)
        if not streams:  # echo only: nothing to generate
            results = {(k, i): SequenceResult(finish_reason="length")
                       for k in range(len(plan.prompts)) for i in range(plan.n)}
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
            if plan.samples > plan.n:  # best_of: the n with the highest mean logprob
                sequences = sorted(sequences, key=lambda r: r.mean_logprob, reverse=True)[: plan.n]
            for rank, result in enumerate(sequences):
                choices.append(self.choice(plan, key * plan.n + rank, result, echo[key] if echo else None))
        plan.used.cached_tokens = cached_tokens(results, len(plan.prompts))
        return self.header(plan) | {
            "choices": choices,
            "usage": usage_body(plan.prompt_tokens, completion_tokens, plan.used.cached_tokens),
        }

    # ------------------------------------------------------------------ streaming
    async def stream(self, plan: Plan) -> AsyncIterator[bytes]:
        """Open the engine streams now (so errors are HTTP statuses), then return the SSE body."""
        streams = await self.open(plan)
        return self._sse(plan, streams, self.echo_parts(plan, streams))

    def opening_chunks(self, plan: Plan, echo: Any) -> Iterator[tuple[int, dict[str, Any], str | None]]:
        """``(choice index, body, finish_reason)`` sent before the engine's first delta."""
        return iter(())

    @abstractmethod
    def delta_chunks(self, plan: Plan, state: ChoiceStream,
                     delta: SequenceDelta) -> list[tuple[dict[str, Any], str | None]]:
        """The chunk bodies (and finish reasons) one engine delta of a choice becomes."""

    def new_choice_stream(self, plan: Plan, index: int, echo: Any) -> ChoiceStream:
        return ChoiceStream(index)

    async def _sse(self, plan: Plan, streams: list[PrimedStream], echo: Any) -> AsyncIterator[bytes]:
        used = plan.used
        timer = GenerationTimer(used)
        cached: dict[int, int] = {}  # per prompt: tokens served from the prefix cache

        def chunk(index: int, body: dict, finish: str | None = None) -> bytes:
            extra: dict = {}
            if plan.include_usage:  # null until the last chunk, or the usage so far on every chunk
                so_far = usage_body(plan.prompt_tokens, used.output_tokens, sum(cached.values()))
                extra = {"usage": so_far if plan.continuous_usage else None}
            choice = {"index": index} | body | {"finish_reason": finish}
            return sse_frame(self.header(plan, chunk=True) | {"choices": [choice]} | extra)

        try:
            for index, body, finish in self.opening_chunks(plan, echo):
                yield chunk(index, body, finish)
            states: dict[int, ChoiceStream] = {}
            merged = engine_io.merge(streams)
            async for key, delta in merged:
                index = key * plan.n + delta.index
                state = states.get(index) or states.setdefault(index, self.new_choice_stream(plan, index, echo))
                if state.done:  # a repeated call ended its turn: the rest is dropped
                    continue
                if delta.cached_tokens is not None:
                    cached[key] = max(cached.get(key, 0), delta.cached_tokens)
                    used.cached_tokens = sum(cached.values())
                timer.tokens(len(delta.token_ids))
                if delta.finish_reason is not None:
                    state.done = True
                elif not delta.text and not (delta.logprobs and plan.logprobs is not None):
                    continue  # nothing to send yet (a token that writes no text)
                for body, finish in self.delta_chunks(plan, state, delta):
                    yield chunk(index, body, finish)
                if state.ended_early and sum(s.done for s in states.values()) == plan.choices:
                    await merged.aclose()  # cancels the request: its rows leave the batch
                    break
            timer.done()
            if plan.include_usage:
                usage = usage_body(plan.prompt_tokens, used.output_tokens, sum(cached.values()))
                yield sse_frame(self.header(plan, chunk=True) | {"choices": [], "usage": usage})
        except asyncio.CancelledError:
            raise  # the client went away: merge() has cancelled the requests
        except Exception as exc:  # after the first byte, an error is a frame, then [DONE]
            error = engine_io.engine_failure(exc)
            yield sse_frame(error_payload(error.message, type=error.type, param=error.param, code=error.code))
        yield SSE_DONE


@dataclass
class ChoiceStream:
    """One streamed choice's state between its deltas."""

    index: int
    done: bool = False  # its finish_reason has been sent
    ended_early: bool = False  # it ended before the engine's end (a tool turn that is over)
    offset: int = 0  # completions: where its next token's text starts (logprobs' text_offset)
    calls: tools.DeltaStream | None = None  # chat with tools: the call parser
