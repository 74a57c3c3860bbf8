"""/v1/completions: prompts as text or token ids (several per request), ``best_of``,
``echo`` (with the prompt's own logprobs), and the legacy logprobs shape."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from completions import structured
from completions.engine_io import PrimedStream, SequenceResult
from completions.serializers import CompletionRequestSerializer
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
from core.usage import Usage
from inference.types import SequenceDelta, TokenLogprob
from models_api.engine import aload_model
from models_api.models import ModelEntry
from models_api.selectors import sampling_defaults

if TYPE_CHECKING:
    from inference.generator import TextGenerator

Scored = list[tuple[str, str, "TokenLogprob | None"]]  # (display token, text it adds, logprob)


def _prompt_ids(generator: TextGenerator, prompt: str | list[int]) -> list[int]:
    return generator.encode(prompt) if isinstance(prompt, str) else list(prompt)


def text_completion_logprobs(entries: Scored, start_offset: int,
                             into: dict[str, list] | None = None) -> dict[str, list]:
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


class CompletionServing(Serving):
    object = "text_completion"
    chunk_object = "text_completion"
    id_prefix = "cmpl"
    prompt_param = "prompt"
    upstream_path = "/completions"
    serializer_class = CompletionRequestSerializer

    async def plan(self, data: dict[str, Any], entry: ModelEntry, used: Usage) -> Plan:
        n = cap(data.get("n") or 1, "n")
        samples = cap(data.get("best_of") or n, "best_of")
        generator = await aload_model(entry)
        # Tokenising is CPU work that grows with the request: off the event loop.
        prompts = await asyncio.to_thread(lambda: [_prompt_ids(generator, p) for p in data["prompt"]])
        defaults = sampling_defaults(entry)
        max_tokens = data.get("max_tokens")
        if max_tokens is None:  # the row's default, cut to the window; else OpenAI's 16
            longest = max(len(ids) for ids in prompts)
            max_tokens = default_length(defaults, generator.context_length - longest, 16)
        for ids in prompts:
            check_context(generator.context_length, len(ids), max_tokens, "prompt")
        asked = data.get("logprobs")
        # best_of ranks by mean logprob, so the engine computes them even when not shown
        engine_logprobs = asked if asked is not None else (0 if samples > n else None)
        echo = bool(data.get("echo"))
        sampling = sampling_params(data, max_tokens=max_tokens, logprobs=engine_logprobs, defaults=defaults)
        if echo and asked is not None:  # the prompt's own logprobs, from the request's prefill
            sampling = replace(sampling, prompt_logprobs=asked)
        return Plan(
            entry=entry,
            generator=generator,
            prompts=prompts,
            sampling=sampling,
            n=n,
            samples=samples,
            logprobs=asked,
            used=used,
            echo=echo,
            grammar=await compile_grammar(generator, structured.grammar_spec(data)),
            prompt_texts=[p if isinstance(p, str) else None for p in data["prompt"]],
            id=self.new_id(),
            **stream_fields(data),
        )

    def echo_parts(self, plan: Plan, streams: list[PrimedStream]) -> list[tuple[str, Scored]] | None:
        """Per prompt: its text (as sent; decoded when sent as token ids) and, when logprobs
        are asked for, its scored tokens: the engine scored them while reading the prompt
        (``prompt_logprobs``), and they came with the first delta of its stream."""
        if not plan.echo:
            return None
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

    def choice(self, plan: Plan, index: int, result: SequenceResult, echo: Any) -> dict[str, Any]:
        prefix, prompt_scored = echo if echo else ("", [])
        logprobs = None
        if plan.logprobs is not None:
            logprobs = text_completion_logprobs(prompt_scored, 0)
            text_completion_logprobs(_generated(result.logprobs), len(prefix), into=logprobs)
        return {"text": prefix + result.text, "index": index, "logprobs": logprobs,
                "finish_reason": result.finish_reason}

    def opening_chunks(self, plan: Plan, echo: Any) -> Iterator[tuple[int, dict[str, Any], str | None]]:
        if echo:
            for index in range(plan.choices):
                text, scored = echo[index // plan.n]
                logprobs = text_completion_logprobs(scored, 0) if plan.logprobs is not None else None
                yield index, {"text": text, "logprobs": logprobs}, None
        if not self.reads_prompts(plan):  # echo without logprobs, max_tokens 0
            for index in range(plan.choices):
                yield index, {"text": "", "logprobs": None}, "length"

    def new_choice_stream(self, plan: Plan, index: int, echo: Any) -> ChoiceStream:
        # logprobs' text offsets count from the end of the echoed prompt
        return ChoiceStream(index, offset=len(echo[index // plan.n][0]) if echo else 0)

    def delta_chunks(self, plan: Plan, state: ChoiceStream,
                     delta: SequenceDelta) -> list[tuple[dict[str, Any], str | None]]:
        logprobs = None
        if plan.logprobs is not None and delta.logprobs:
            logprobs = text_completion_logprobs(_generated(delta.logprobs), state.offset)
            state.offset += sum(len(lp.text) for lp in delta.logprobs)
        return [({"text": delta.text, "logprobs": logprobs}, delta.finish_reason)]


completion = CompletionServing()
