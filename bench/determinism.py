"""``python -m bench.determinism``: does a greedy answer depend on what shares its batch?

Sixteen greedy chat requests through the engine (in process, no HTTP), first one at a
time and then all at once in one batch, for each dtype; it prints how many requests and
tokens differ (from each request's first divergence on). This is the measurement behind
``inference.loading.choose_dtype`` preferring float32 on CPU. Throughput is measured by
``python -m bench`` (the raw model and the server in one run, ``bench.raw``).

    HF_HUB_OFFLINE=1 python -m bench.determinism --dtype bfloat16 float32 --tokens 32
"""

from __future__ import annotations

import argparse
import asyncio
import os

from inference.sources import default_cache_dir

from .prompts import chat_messages
from .raw import DEFAULT_SOURCES

MODEL = "SmolLM2-135M-Instruct"
REQUESTS = 16


def compare(engine, spec, tokens: int) -> tuple[int, int, int, int]:
    """Greedy requests alone vs all concurrently: (requests that differ, requests,
    tokens that differ from the first divergence on, tokens)."""
    from inference.types import GenerationRequest, SamplingParams

    gen = engine.generator(spec)
    prompts = [gen.render_chat(chat_messages(i)) for i in range(REQUESTS)]
    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)

    async def one(i: int) -> list[int]:
        request = GenerationRequest(request_id=f"det-{i}", prompt_token_ids=tuple(prompts[i]), sampling=params)
        return [t async for delta in gen.generate(request) for t in delta.token_ids]

    async def together() -> list[list[int]]:
        return await asyncio.gather(*(one(i) for i in range(REQUESTS)))

    alone = [asyncio.run(one(i)) for i in range(REQUESTS)]
    batched = asyncio.run(together())
    bad_tokens = 0
    for a, b in zip(alone, batched):
        first = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if first is not None:
            bad_tokens += len(a) - first
    return sum(a != b for a, b in zip(alone, batched)), REQUESTS, bad_tokens, REQUESTS * tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from inference.engine import Engine, EngineConfig
    from inference.types import ModelSpec

    source_type, source = DEFAULT_SOURCES[MODEL]
    engine = Engine(EngineConfig(cache_dir=default_cache_dir(), max_batch_size=REQUESTS))
    try:
        for dtype in args.dtype:
            spec = ModelSpec(id=f"{MODEL}-{dtype}", task="text-generation", source_type=source_type,  # type: ignore[arg-type]
                             source=source, dtype=dtype)
            differ, total, bad, tokens = compare(engine, spec, args.tokens)
            print(f"{dtype:9s}: {differ}/{total} greedy requests differ batched vs alone "
                  f"({bad}/{tokens} tokens after the first divergence)", flush=True)
            engine.unload(spec.id)
    finally:
        engine.shutdown()


if __name__ == "__main__":
    main()
