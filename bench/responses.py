"""The Responses scenario: streamed ``/v1/responses`` beside streamed chat, level by level
in the same run, with the same prompts (TPOT ratio; the target is within 1.05x of chat).

The Responses API has no ``ignore_eos``, so both sides run without it: greedy, same
prompt and template, so each request writes the same tokens on either endpoint and the
per-token times compare like for like. A Responses stream is timed like a chat one:
TTFT at the first ``response.output_text.delta``, ITL between deltas, E2E at the final
``response.completed``/``.incomplete`` event, tokens from that event's ``usage``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from .client import LevelRun, RequestResult, request_body
from .prompts import question

FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")


def responses_body(i: int, *, model: str, max_tokens: int) -> dict[str, Any]:
    return {"model": model, "input": question(i), "max_output_tokens": max_tokens, "temperature": 0,
            "stream": True, "store": False}


async def stream_response(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> RequestResult:
    """One streamed response, timed."""
    start = time.perf_counter()
    result = RequestResult(ok=False, start=start)
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
                now = time.perf_counter()
                event = json.loads(line[5:].strip())
                kind = event.get("type")
                if kind == "response.output_text.delta" and event.get("delta"):
                    result.text_arrived(now)
                elif kind in FINAL_EVENTS:
                    usage = event["response"].get("usage") or {}
                    result.usage_reported = bool(usage)
                    result.output_tokens = int(usage.get("output_tokens") or 0)
                    result.prompt_tokens = usage.get("input_tokens")
                    if kind == "response.failed":
                        result.error = f"response.failed: {json.dumps(event['response'].get('error'))[:200]}"
                    break
            else:
                result.error = "the stream ended without a final response event"
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.finish()
    return result


async def _run(base_url: str, endpoint: str, concurrency: int, num_requests: int, *, model: str, max_tokens: int,
               api_key: str | None, on_done: Callable[[RequestResult], None] | None) -> LevelRun:
    path = "/v1/responses" if endpoint == "responses" else "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(600.0, connect=30.0), headers=headers) as client:
        async def one(i: int) -> RequestResult:
            async with semaphore:
                if endpoint == "responses":
                    result = await stream_response(client, base_url.rstrip("/") + path,
                                                   responses_body(i, model=model, max_tokens=max_tokens))
                else:
                    from .client import stream_request

                    body = request_body("chat", i, model=model, max_tokens=max_tokens, ignore_eos=False,
                                        temperature=0.0)
                    result = await stream_request(client, base_url.rstrip("/") + path, body)
            if on_done is not None:
                on_done(result)
            return result

        start = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(num_requests)))
        wall = time.perf_counter() - start
    return LevelRun(endpoint=endpoint, concurrency=concurrency, wall_s=wall, results=list(results))


def run_responses(base_url: str, levels: list[int], requests_for: Callable[[int], int], *, model: str,
                  max_tokens: int, api_key: str | None, summarize: Callable[[Any], dict[str, Any]],
                  on_phase: Callable[[str], None], on_done: Callable[[RequestResult], None] | None = None,
                  ) -> list[dict[str, Any]]:
    """Per level: chat, then responses, same prompts; their TPOT p50 ratio."""
    rows = []
    for level in levels:
        pair = {}
        for endpoint in ("chat", "responses"):
            on_phase(f"responses scenario: {endpoint} c={level}")
            run = asyncio.run(_run(base_url, endpoint, level, requests_for(level), model=model,
                                   max_tokens=max_tokens, api_key=api_key, on_done=on_done))
            pair[endpoint] = summarize(run)
        chat, responses = pair["chat"]["tpot_ms"], pair["responses"]["tpot_ms"]
        ratio = round(responses["p50"] / chat["p50"], 3) if chat["p50"] and responses["p50"] else None
        rows.append({"concurrency": level, "chat": pair["chat"], "responses": pair["responses"],
                     "tpot_p50_ratio": ratio, "target": "TPOT p50 within 1.05x of chat",
                     "met": None if ratio is None else ratio <= 1.05})
    return rows


def render(section: dict[str, Any]) -> list[str]:
    lines = ["", "Responses API: streamed /v1/responses vs streamed chat, same prompts, greedy (times in ms)",
             f"{'conc':>4} {'chat TPOT50':>11} {'resp TPOT50':>11} {'ratio':>5} {'chat TTFT50':>11} "
             f"{'resp TTFT50':>11} {'tokens/req':>10} {'fail':>4}"]
    for row in section.get("levels", []):
        c, r = row["chat"], row["responses"]
        lines.append(f"{row['concurrency']:>4} {c['tpot_ms']['p50'] or '-':>11} {r['tpot_ms']['p50'] or '-':>11} "
                     f"{row['tpot_p50_ratio'] or '-':>5} {c['ttft_ms']['p50'] or '-':>11} "
                     f"{r['ttft_ms']['p50'] or '-':>11} {r['mean_output_tokens'] or '-':>10} "
                     f"{c['failures'] + r['failures']:>4}")
    return lines
