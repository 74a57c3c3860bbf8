"""What a dtype costs in accuracy: a small fixed evaluation, printed per dtype.

For each dtype the model is loaded the way the engine loads it (``int8``/``int4``
through the quantization cache) and measured against float32 on:

* **greedy agreement**: :data:`EVAL_PROMPTS` rendered with the chat template, ``tokens``
  greedy tokens each; the share of prompts whose continuation is identical to
  float32's, and the mean share of tokens produced before the first divergence;
* **perplexity** of ``bench/data/eval_text.txt`` (a short text that ships with the
  repository), one forward pass, and its ratio to float32's.

Run alone with ``python -m bench.quality`` (``--dtypes``, ``--tokens``), or as part of
``python -m bench``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

EVAL_TEXT = Path(__file__).parent / "data" / "eval_text.txt"
EVAL_PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain what a prime number is.",
    "Give three tips for learning a new language.",
    "What is 12 times 7?",
    "Describe a cat in two sentences.",
    "Why is the sky blue?",
    "Translate 'good morning' into Spanish.",
]
DEFAULT_DTYPES = ("float32", "bfloat16", "int8", "int4")


def _greedy(model: Any, prompt_ids: list[int], tokens: int) -> list[int]:
    import torch

    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=tokens, min_new_tokens=tokens,
                             do_sample=False, pad_token_id=0)
    return out[0, len(prompt_ids):].tolist()


def _perplexity(model: Any, tokenizer: Any, text: str) -> float:
    import torch
    import torch.nn.functional as F

    ids = torch.tensor([tokenizer.encode(text)])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, :-1].float()
    return math.exp(F.cross_entropy(logits, ids[0, 1:]).item())


def evaluate(model_id: str = "SmolLM2-135M-Instruct", *, dtypes: tuple[str, ...] = DEFAULT_DTYPES,
             tokens: int = 32, prompts: int = len(EVAL_PROMPTS), source: str | None = None) -> list[dict[str, Any]]:
    """One row per dtype: greedy agreement with float32 and perplexity (float32 first)."""
    from .raw import load_raw_model

    order = ["float32", *[d for d in dtypes if d != "float32"]]
    text = EVAL_TEXT.read_text(encoding="utf-8")
    reference: list[list[int]] = []
    ref_ppl = math.nan
    rows: list[dict[str, Any]] = []
    for dtype in order:
        loaded = load_raw_model(model_id, source=source, dtype=dtype)
        tok = loaded.tokenizer
        encoded = [
            list(tok.encode(tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                    tokenize=False), add_special_tokens=False))
            for p in EVAL_PROMPTS[:prompts]
        ]
        outputs = [_greedy(loaded.model, ids, tokens) for ids in encoded]
        ppl = _perplexity(loaded.model, tok, text)
        if dtype == "float32":
            reference, ref_ppl = outputs, ppl
        prefix = [_common_prefix(a, b) / tokens for a, b in zip(outputs, reference)]
        rows.append({
            "dtype": dtype,
            "weights": loaded.dtype,
            "identical": sum(a == b for a, b in zip(outputs, reference)),
            "prompts": len(outputs),
            "tokens": tokens,
            "prefix_agreement": round(sum(prefix) / len(prefix), 3),
            "perplexity": round(ppl, 3),
            "perplexity_ratio": round(ppl / ref_ppl, 4),
        })
        del loaded
    return [row for d in dtypes for row in rows if row["dtype"] == d]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "quality vs float32 (greedy agreement on fixed chat prompts; perplexity of bench/data/eval_text.txt)",
        f"{'dtype':9s} {'identical':>10s} {'agreement':>10s} {'perplexity':>11s} {'vs f32':>7s}",
    ]
    for r in rows:
        lines.append(f"{r['dtype']:9s} {r['identical']:>4d} of {r['prompts']:<3d} {r['prefix_agreement']:>10.1%} "
                     f"{r['perplexity']:>11.3f} {r['perplexity_ratio']:>7.3f}")
    lines.append("agreement: mean share of each answer's first tokens that match float32's before they diverge")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--dtypes", default=",".join(DEFAULT_DTYPES))
    parser.add_argument("--tokens", type=int, default=32, help="greedy tokens per prompt (default %(default)s)")
    args = parser.parse_args(argv)
    dtypes = tuple(d.strip() for d in args.dtypes.split(",") if d.strip())
    print(render(evaluate(args.model, dtypes=dtypes, tokens=args.tokens)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
