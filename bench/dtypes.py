"""``python -m bench --dtypes int8,int4``: the same server in other CPU dtypes, in the same run.

After the main (float32) server is measured, one fresh server per dtype is started with
``CPU_DTYPE`` set, so the default registry's models load in that dtype. Per dtype: two
cold starts (the first may include the one-time quantization into the model cache, the
second has the cache warm; only the second with ``--quick`` or ``--skip-cold-start``),
resident memory with both default models loaded, and the same streaming levels as the
main server. The table gives each figure beside the main server's and their ratio.

The streaming levels send mid-length prompts, so each server also answers at c=1 one
prompt of each length in :data:`bench.prompts.PROMPT_LENGTHS` (4 to 256 tokens,
/v1/completions), the main server too (:func:`run_prompt_lengths`): a format whose
decode steps are slow over a short context shows up as a low ratio there. The servers
run one after another, minutes apart; :mod:`bench.prompt_lengths` interleaves them for
ratios a drifting machine cannot skew.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import client
from .prompts import PROMPT_LENGTHS, prompt_of_length
from .server import UvicornServer, measure_cold_start, own_database, resident_memory

CPU_DTYPES = ("float32", "bfloat16", "int8", "int4")


def run_dtype_server(dtype: str, workdir: Path, args: argparse.Namespace, warm_up: Callable[..., None],
                     on_done: Callable[..., None]) -> dict[str, Any]:
    server = UvicornServer(workdir, **own_database(workdir), CPU_DTYPE=dtype)
    try:
        server.migrate()
        cold: dict[str, Any] = {}
        if not (args.quick or args.skip_cold_start):  # the first start may quantize into the cache
            cold["first_start"] = measure_cold_start(server, args.model)
            server.stop()
        cold["with_model_cache"] = measure_cold_start(server, args.model)
        warm_up(server.base_url, args, embeddings=bool(args.embedding_model))
        memory = resident_memory(server.pid)  # type: ignore[arg-type]
        levels: dict[str, list[dict[str, Any]]] = {endpoint: [] for endpoint in args.endpoints}
        for level in args.levels:
            for endpoint in args.endpoints:
                requests = args.requests_per_level or max(8, 4 * level)
                run = client.run_level(server.base_url, endpoint, level, requests, model=args.model,
                                       max_tokens=args.max_tokens, ignore_eos=not args.no_ignore_eos,
                                       api_key=args.api_key, on_done=on_done)
                levels[endpoint].append(client.summarize(run))
        by_length = run_prompt_lengths(server.base_url, args, on_done)
    finally:
        server.stop()
    return {"cold_start": cold, "memory": memory, "server": levels, "prompt_lengths": by_length}


def run_prompt_lengths(base_url: str, args: argparse.Namespace, on_done: Callable[..., None]) -> list[dict[str, Any]]:
    """c=1, /v1/completions, one prompt per length of :data:`PROMPT_LENGTHS`, sent
    ``--requests-per-level`` times (default 4): each level's summary with the prompt's
    real token count."""
    rows = []
    for length in PROMPT_LENGTHS:
        run = client.run_level(base_url, "completions", 1, args.requests_per_level or 4, model=args.model,
                               max_tokens=args.max_tokens, ignore_eos=not args.no_ignore_eos, api_key=args.api_key,
                               on_done=on_done, prompt_text=prompt_of_length(length))
        summary = client.summarize(run)
        summary["prompt_tokens"] = next((r.prompt_tokens for r in run.results if r.prompt_tokens), None)
        summary["prompt_length"] = length
        rows.append(summary)
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def compare(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per dtype, endpoint and level: tok/s and TTFT p50 beside the main server's."""
    main = {(lvl["endpoint"], lvl["concurrency"]): lvl for lvls in results["server"].values() for lvl in lvls}
    rows = []
    for dtype, data in results.get("dtypes", {}).items():
        for endpoint, levels in data["server"].items():
            for lvl in levels:
                base = main.get((endpoint, lvl["concurrency"]))
                if base is None:
                    continue
                rows.append({
                    "dtype": dtype, "endpoint": endpoint, "concurrency": lvl["concurrency"],
                    "tokens_per_s": lvl["output_tokens_per_s"], "main_tokens_per_s": base["output_tokens_per_s"],
                    "tokens_per_s_ratio": _ratio(lvl["output_tokens_per_s"], base["output_tokens_per_s"]),
                    "ttft_p50_ms": lvl["ttft_ms"]["p50"], "main_ttft_p50_ms": base["ttft_ms"]["p50"],
                    "ttft_ratio": _ratio(lvl["ttft_ms"]["p50"], base["ttft_ms"]["p50"]),
                    "failures": lvl["failures"],
                })
        main_lengths = {r["prompt_length"]: r for r in results.get("prompt_lengths") or []}
        for lvl in data.get("prompt_lengths") or []:
            base = main_lengths.get(lvl["prompt_length"])
            if base is None:
                continue
            rows.append({
                "dtype": dtype, "endpoint": f"prompt~{lvl['prompt_length']}", "concurrency": 1,
                "prompt_tokens": lvl["prompt_tokens"],
                "tokens_per_s": lvl["output_tokens_per_s"], "main_tokens_per_s": base["output_tokens_per_s"],
                "tokens_per_s_ratio": _ratio(lvl["output_tokens_per_s"], base["output_tokens_per_s"]),
                "tpot_p50_ms": lvl["tpot_ms"]["p50"], "main_tpot_p50_ms": base["tpot_ms"]["p50"],
                "ttft_p50_ms": lvl["ttft_ms"]["p50"], "main_ttft_p50_ms": base["ttft_ms"]["p50"],
                "ttft_ratio": _ratio(lvl["ttft_ms"]["p50"], base["ttft_ms"]["p50"]),
                "failures": lvl["failures"],
            })
    return rows


def render(results: dict[str, Any]) -> str:
    rows = results.get("dtype_comparison") or []
    if not rows:
        return ""
    main_dtype = results["meta"].get("server_cpu_dtype", "float32")
    lines = ["", f"other CPU dtypes against the main ({main_dtype}) server, same run",
             f"{'dtype':8s} {'endpoint':11s} {'conc':>4} {'tok/s':>7} {'main':>7} {'ratio':>5}  "
             f"{'TTFT50':>7} {'main':>7} {'ratio':>5} {'fail':>4}"]
    for r in rows:
        lines.append(f"{r['dtype']:8s} {r['endpoint']:11s} {r['concurrency']:>4} {r['tokens_per_s'] or 0:>7.1f} "
                     f"{r['main_tokens_per_s'] or 0:>7.1f} {r['tokens_per_s_ratio'] or 0:>5.2f}  "
                     f"{r['ttft_p50_ms'] or 0:>7.1f} {r['main_ttft_p50_ms'] or 0:>7.1f} {r['ttft_ratio'] or 0:>5.2f} "
                     f"{r['failures']:>4}")
    main_mem = (results.get("memory") or {}).get("rss_mb")
    for dtype, data in results.get("dtypes", {}).items():
        cold = data["cold_start"]
        first = f"{cold['first_start']['first_answer_s']} s first, " if "first_start" in cold else ""
        lines.append(f"{dtype}: {data['memory']['rss_mb']} MB resident with both default models "
                     f"(main: {main_mem} MB); cold start to first answer {first}"
                     f"{cold['with_model_cache']['first_answer_s']} s with the model cache warm")
    return "\n".join(lines)
