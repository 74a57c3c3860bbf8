"""The load generator: streaming OpenAI requests over HTTP at a fixed concurrency.

Each request is timed from just before it is sent: TTFT is the arrival of the first
chunk carrying text, inter-token latencies (ITL) are the gaps between text chunks, E2E
is the arrival of ``data: [DONE]``, and TPOT = (E2E - TTFT) / (tokens - 1) with the
token count from the final ``include_usage`` chunk (the number of text chunks when a
server sends no usage). A level sends ``num_requests`` requests with at most
``concurrency`` in flight (a new one starts as soon as one ends), like vLLM's
``benchmark_serving --max-concurrency``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from .prompts import chat_messages, prompt

# chat_json: the chat request with a json_schema response_format (bench.structured).
ENDPOINT_PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions", "chat_json": "/v1/chat/completions"}


@dataclass
class RequestResult:
    ok: bool
    start: float  # perf_counter at send
    e2e_s: float = 0.0
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int | None = None
    usage_reported: bool = False
    error: str | None = None
    _last: float = field(default=0.0, repr=False)  # when the latest text arrived

    def text_arrived(self, now: float) -> None:
        """A piece of answer text arrived at ``now`` (``time.perf_counter()``): the first
        sets TTFT, each later one adds an inter-token gap."""
        if self.ttft_s is None:
            self.ttft_s = now - self.start
        else:
            self.itl_s.append(now - self._last)
        self._last = now

    def finish(self) -> None:
        """The request is over: its end-to-end time, and ok when it ended without an
        error and with tokens."""
        self.e2e_s = time.perf_counter() - self.start
        self.ok = self.error is None and self.output_tokens > 0
        if self.error is None and not self.ok:
            self.error = "no tokens"

    @property
    def tpot_s(self) -> float | None:
        if self.ttft_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


def request_body(endpoint: str, i: int, *, model: str, max_tokens: int, ignore_eos: bool,
                 temperature: float, prompt_text: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:
        body["ignore_eos"] = True  # a vLLM/llama.cpp extension: every request decodes max_tokens
    if endpoint in ("chat", "chat_json"):
        body["messages"] = chat_messages(i)
        if endpoint == "chat_json":
            from .structured import RESPONSE_FORMAT

            body["response_format"] = RESPONSE_FORMAT
    else:
        body["prompt"] = prompt(i) if prompt_text is None else prompt_text
    return body


def _chunk_text(chunk: dict[str, Any]) -> str:
    text = ""
    for choice in chunk.get("choices") or []:
        if "text" in choice:
            text += choice.get("text") or ""
        else:
            text += (choice.get("delta") or {}).get("content") or ""
    return text


async def stream_request(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> RequestResult:
    """Send one streaming request and time its chunks."""
    start = time.perf_counter()
    result = RequestResult(ok=False, start=start)
    chunks = 0
    done = False  # saw data: [DONE], or (servers that omit it) a finish_reason
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                await response.aread()
                result.error = f"HTTP {response.status_code}: {response.text[:200]}"
                result.finish()
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                now = time.perf_counter()
                chunk = json.loads(data)
                if "error" in chunk:
                    result.error = f"error frame: {json.dumps(chunk['error'])[:200]}"
                    break
                if _chunk_text(chunk):
                    chunks += 1
                    result.text_arrived(now)
                if any(c.get("finish_reason") for c in chunk.get("choices") or []):
                    done = True
                usage = chunk.get("usage")
                if usage:
                    result.usage_reported = True
                    result.output_tokens = int(usage.get("completion_tokens") or 0)
                    result.prompt_tokens = usage.get("prompt_tokens")
    except (httpx.HTTPError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    if not result.usage_reported:
        result.output_tokens = chunks
    if result.error is None and not done:
        result.error = "the stream ended without a finish_reason or data: [DONE]"
    result.finish()
    return result


@dataclass
class LevelRun:
    endpoint: str
    concurrency: int
    wall_s: float
    results: list[RequestResult]


async def _run_level(base_url: str, endpoint: str, concurrency: int, num_requests: int, *,
                     model: str, max_tokens: int, ignore_eos: bool, temperature: float,
                     api_key: str | None, on_done: Callable[[RequestResult], None] | None,
                     first_index: int, prompt_text: str | None = None) -> LevelRun:
    url = base_url.rstrip("/") + ENDPOINT_PATHS[endpoint]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    timeout = httpx.Timeout(600.0, connect=30.0)
    semaphore = asyncio.Semaphore(concurrency)

    async with httpx.AsyncClient(limits=limits, timeout=timeout, headers=headers) as client:
        async def one(i: int) -> RequestResult:
            async with semaphore:
                body = request_body(endpoint, first_index + i, model=model, max_tokens=max_tokens,
                                    ignore_eos=ignore_eos, temperature=temperature, prompt_text=prompt_text)
                result = await stream_request(client, url, body)
            if on_done is not None:
                on_done(result)
            return result

        start = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(num_requests)))
        wall = time.perf_counter() - start
    return LevelRun(endpoint=endpoint, concurrency=concurrency, wall_s=wall, results=list(results))


def run_level(base_url: str, endpoint: str, concurrency: int, num_requests: int, *, model: str,
              max_tokens: int, ignore_eos: bool = True, temperature: float = 0.0, api_key: str | None = None,
              on_done: Callable[[RequestResult], None] | None = None, first_index: int = 0,
              prompt_text: str | None = None) -> LevelRun:
    """Run one concurrency level to completion (its own event loop); ``prompt_text``: the
    /v1/completions prompt of every request instead of the varied ones."""
    return asyncio.run(_run_level(base_url, endpoint, concurrency, num_requests, model=model,
                                  max_tokens=max_tokens, ignore_eos=ignore_eos, temperature=temperature,
                                  api_key=api_key, on_done=on_done, first_index=first_index,
                                  prompt_text=prompt_text))


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), ``q`` in 0..100."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(run: LevelRun) -> dict[str, Any]:
    """Per-level figures: requests/s, aggregate output tokens/s, TTFT/TPOT/ITL/E2E percentiles."""
    ok = [r for r in run.results if r.ok]
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    tpot = [t for t in (r.tpot_s for r in ok) if t is not None]
    itl = [x for r in ok for x in r.itl_s]
    e2e = [r.e2e_s for r in ok]
    tokens = sum(r.output_tokens for r in ok)

    def ms(values: list[float], q: float) -> float | None:
        p = percentile(values, q)
        return None if p is None else round(p * 1000, 2)

    return {
        "endpoint": run.endpoint,
        "concurrency": run.concurrency,
        "requests": len(run.results),
        "completed": len(ok),
        "failures": len(run.results) - len(ok),
        "errors": sorted({r.error for r in run.results if r.error})[:5],
        "wall_s": round(run.wall_s, 3),
        "requests_per_s": round(len(ok) / run.wall_s, 3) if run.wall_s > 0 else None,
        "output_tokens": tokens,
        "output_tokens_per_s": round(tokens / run.wall_s, 2) if run.wall_s > 0 else None,
        "mean_output_tokens": round(tokens / len(ok), 2) if ok else None,
        "usage_reported": all(r.usage_reported for r in ok) if ok else False,
        "ttft_ms": {"mean": _mean_ms(ttft), "p50": ms(ttft, 50), "p99": ms(ttft, 99)},
        "tpot_ms": {"mean": _mean_ms(tpot), "p50": ms(tpot, 50), "p99": ms(tpot, 99)},
        "itl_ms": {"mean": _mean_ms(itl), "p50": ms(itl, 50), "p99": ms(itl, 99)},
        "e2e_ms": {"mean": _mean_ms(e2e), "p50": ms(e2e, 50), "p99": ms(e2e, 99)},
    }


def _mean_ms(values: list[float]) -> float | None:
    return round(sum(values) / len(values) * 1000, 2) if values else None
