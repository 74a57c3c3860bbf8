"""``python -m bench.prompt_lengths``: decode speed per CPU dtype and prompt length, the
dtypes interleaved so that a shared machine's drift hits them alike.

``python -m bench --dtypes`` measures one server after another, which takes minutes per
dtype; on a shared virtual machine the speed of the whole machine can move by a third in
that time, and a ratio between two servers measured minutes apart then says more about
the machine than about the dtypes. Here one server per dtype is started (they stay idle
while another is measured), and the measurement goes round by round: in each round,
for each prompt length of :data:`bench.prompts.PROMPT_LENGTHS`, each dtype answers the
same ``--requests`` streamed /v1/completions requests at concurrency 1 (greedy,
``ignore_eos``, ``--max-tokens`` tokens). A cell is the median over rounds of each
round's TPOT p50 (time per output token after the first); the ratio is the first
dtype's TPOT over the cell's, so above 1 is faster. A first round, not counted, warms
every server on every length (the first requests of a fresh process run slower).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

from . import client
from .prompts import PROMPT_LENGTHS, prompt_of_length
from .server import UvicornServer, first_answer, own_database

MODEL = "SmolLM2-135M-Instruct"
# The speed-ups over float32 a quantized format is expected to give at one stream.
TARGETS = {"int8": 1.6, "int4": 1.9}


def measure(dtypes: list[str], lengths: list[int], rounds: int, requests: int, max_tokens: int,
            workdir: Path) -> dict[str, Any]:
    servers: dict[str, UvicornServer] = {}
    tpot: dict[tuple[str, int], list[float]] = {(d, n): [] for d in dtypes for n in lengths}
    prompt_tokens: dict[int, int | None] = {}
    try:
        for dtype in dtypes:
            server = UvicornServer(workdir / dtype, **own_database(workdir / dtype), CPU_DTYPE=dtype)
            servers[dtype] = server.start()
            first_answer(server.base_url, MODEL)
        for round_ in range(rounds + 1):
            for length in lengths:
                for dtype, server in servers.items():
                    run = client.run_level(server.base_url, "completions", 1, requests, model=MODEL,
                                           max_tokens=max_tokens, prompt_text=prompt_of_length(length))
                    summary = client.summarize(run)
                    if summary["failures"]:
                        raise SystemExit(f"{dtype}: {summary['errors']}")
                    if round_ == 0:  # the warm-up round
                        continue
                    tpot[(dtype, length)].append(summary["tpot_ms"]["p50"])
                    prompt_tokens[length] = next((r.prompt_tokens for r in run.results if r.prompt_tokens), None)
    finally:
        for server in servers.values():
            server.stop()
    rows = []
    for length in lengths:
        base = statistics.median(tpot[(dtypes[0], length)])
        for dtype in dtypes:
            cell = statistics.median(tpot[(dtype, length)])
            rows.append({"dtype": dtype, "prompt_length": length, "prompt_tokens": prompt_tokens[length],
                         "tpot_p50_ms": round(cell, 2), "rounds_ms": tpot[(dtype, length)],
                         "speedup": round(base / cell, 2)})
    return {"cpu": platform.processor() or platform.machine(), "rounds": rounds, "requests": requests,
            "max_tokens": max_tokens, "rows": rows}


def render(result: dict[str, Any], dtypes: list[str]) -> str:
    base = dtypes[0]
    lines = [f"| prompt tokens | {' | '.join(f'{d} ms/token' for d in dtypes)} | "
             f"{' | '.join(f'{base}/{d}' for d in dtypes[1:])} |",
             "|" + "---|" * (1 + 2 * len(dtypes) - 1)]
    by_length: dict[int, list[dict[str, Any]]] = {}
    for row in result["rows"]:
        by_length.setdefault(row["prompt_length"], []).append(row)
    missed = []
    for rows in by_length.values():
        cells = {r["dtype"]: r for r in rows}
        speedups = []
        for d in dtypes[1:]:
            speedups.append(f"{cells[d]['speedup']:.2f}x")
            if d in TARGETS and base == "float32" and cells[d]["speedup"] < TARGETS[d]:
                missed.append(f"{d} at {rows[0]['prompt_tokens']} tokens: {cells[d]['speedup']:.2f}x < {TARGETS[d]}x")
        lines.append(f"| {rows[0]['prompt_tokens']} | {' | '.join(str(cells[d]['tpot_p50_ms']) for d in dtypes)} | "
                     f"{' | '.join(speedups)} |")
    lines.append("")
    lines.append("targets (over float32): " + ", ".join(f"{d} >= {t}x" for d, t in TARGETS.items() if d in dtypes))
    lines.append("missed: " + ("; ".join(missed) if missed else "none"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.prompt_lengths", description=__doc__.split("\n")[0])
    parser.add_argument("--dtypes", default="float32,int8,int4", help="CPU_DTYPE of each server; the first is "
                        "the baseline (default %(default)s)")
    parser.add_argument("--lengths", default=",".join(map(str, PROMPT_LENGTHS)),
                        help="prompt lengths in tokens (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default %(default)s)")
    parser.add_argument("--requests", type=int, default=4, help="requests per cell and round (default %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per answer (default %(default)s)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    dtypes = args.dtypes.split(",")
    with tempfile.TemporaryDirectory(prefix="gpt3dev-lengths-") as tmp:
        result = measure(dtypes, [int(n) for n in args.lengths.split(",")], args.rounds, args.requests,
                         args.max_tokens, Path(tmp))
    print(f"c=1, /v1/completions, {args.max_tokens} tokens, greedy, ignore_eos; TPOT p50, median of "
          f"{args.rounds} interleaved rounds of {args.requests} requests; {result['cpu']}")
    print(render(result, dtypes))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
