"""Driving the engine from async views: start several
generation requests at once (so the scheduler batches them), and merge their deltas.

A request's streams are *primed*: each one's first delta (or its error) has arrived
before the HTTP answer starts, so an overloaded queue or a bad prompt is still a proper
4xx status rather than an error frame inside a 200 stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.errors import APIError, from_engine_error
from inference.errors import EngineError, InvalidInput
from inference.types import GenerationRequest, SequenceDelta, TokenLogprob

if TYPE_CHECKING:  # the engine pulls in torch: import it only where a model is used
    from inference.generator import TextGenerator


@dataclass
class PrimedStream:
    key: int  # which prompt of the request
    deltas: AsyncIterator[SequenceDelta]
    first: SequenceDelta


async def open_streams(
    generator: TextGenerator, requests: list[GenerationRequest], *, prompt_param: str = "prompt"
) -> list[PrimedStream]:
    """Submit every request at once and wait for each one's first delta. An engine refusal
    of the prompt names ``prompt_param`` (chat's prompt is its ``messages``)."""
    try:
        generator.check_total(sum(request.n for request in requests))
    except EngineError as exc:
        raise from_engine_error(exc) from None
    iterators = [generator.generate(request) for request in requests]
    firsts = await asyncio.gather(*(it.__anext__() for it in iterators), return_exceptions=True)
    failure = next((f for f in firsts if isinstance(f, BaseException)), None)
    if failure is not None:
        await asyncio.gather(*(it.aclose() for it in iterators), return_exceptions=True)
        if isinstance(failure, InvalidInput) and failure.param == "prompt":
            failure.param = prompt_param
        if isinstance(failure, EngineError):
            raise from_engine_error(failure)
        raise failure
    return [PrimedStream(key, it, first) for key, (it, first) in enumerate(zip(iterators, firsts))]


async def merge(streams: list[PrimedStream]) -> AsyncIterator[tuple[int, SequenceDelta]]:
    """Yield ``(prompt key, delta)`` from every stream as deltas arrive.

    Closing this generator (a client disconnect cancels the task iterating it) cancels
    every underlying request, which frees its batch slots at the next decode step.
    """
    if len(streams) == 1:
        stream = streams[0]
        try:
            yield stream.key, stream.first
            async for delta in stream.deltas:
                yield stream.key, delta
        finally:
            await stream.deltas.aclose()
        return

    queue: asyncio.Queue = asyncio.Queue()
    end = object()

    async def pump(stream: PrimedStream) -> None:
        try:
            async for delta in stream.deltas:
                queue.put_nowait((stream.key, delta))
            queue.put_nowait((stream.key, end))
        except Exception as exc:  # handed to the consumer, which raises it
            queue.put_nowait((stream.key, exc))

    for stream in streams:
        queue.put_nowait((stream.key, stream.first))
    tasks = [asyncio.create_task(pump(stream)) for stream in streams]
    live = len(streams)
    try:
        while live:
            key, item = await queue.get()
            if item is end:
                live -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield key, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(s.deltas.aclose() for s in streams), return_exceptions=True)


@dataclass
class SequenceResult:
    """Everything one sequence produced, gathered for a non-streaming answer."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    cached_tokens: int = 0  # prompt tokens served from the prefix cache

    def add(self, delta: SequenceDelta) -> None:
        if delta.cached_tokens is not None:
            self.cached_tokens = delta.cached_tokens
        self.text += delta.text
        self.token_ids.extend(delta.token_ids)
        self.logprobs.extend(delta.logprobs)
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason

    @property
    def mean_logprob(self) -> float:
        if not self.logprobs:
            return float("-inf")
        return sum(lp.logprob for lp in self.logprobs) / len(self.logprobs)


async def collect(
    streams: list[PrimedStream],
    n: int,
    on_tokens: Callable[[int], None] | None = None,
    ends_turn: Callable[[tuple[int, int], str], bool] | None = None,
) -> dict[tuple[int, int], SequenceResult]:
    """Run every stream to its end: ``{(prompt key, sequence index): result}``.
    ``on_tokens(count)`` hears of tokens as they arrive (so a request cut short still
    knows what it generated). ``ends_turn(sequence, text)`` sees each sequence's text as
    it grows; True ends that sequence there with "stop" (what it writes after is
    dropped), and once every sequence has ended the requests are cancelled."""
    results = {(s.key, i): SequenceResult() for s in streams for i in range(n)}
    live = set(results)
    try:
        async with contextlib.aclosing(merge(streams)) as deltas:
            async for key, delta in deltas:
                sequence = (key, delta.index)
                if sequence not in live:
                    continue
                results[sequence].add(delta)
                if on_tokens is not None and delta.token_ids:
                    on_tokens(len(delta.token_ids))
                if delta.finish_reason is None and ends_turn is not None and ends_turn(sequence, delta.text):
                    results[sequence].finish_reason = "stop"
                if results[sequence].finish_reason is not None:
                    live.discard(sequence)
                    if not live:
                        break
    except EngineError as exc:
        raise from_engine_error(exc) from None
    return results


def engine_failure(exc: Exception) -> APIError:
    return from_engine_error(exc) if isinstance(exc, EngineError) else APIError(
        500, "The engine failed while generating.", code="engine_error"
    )
