"""Put server and raw figures side by side: the ratios, the targets, a printed table,
``results.json`` and ``bench.png`` (tokens/s and TTFT against concurrency)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ENDPOINT_TITLES = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}

# The issue's targets on the 2-core CPU class: (concurrency, minimum tok/s ratio to raw).
THROUGHPUT_TARGETS = ((1, 0.95), (8, 0.90), (16, 0.85))
TTFT_TARGET = (1, 1.5)  # concurrency 1: TTFT p50 at most 1.5x raw prefill + first token
RSS_TARGET_MB = 1200.0
BUSY_MACHINE_CORES = 0.25  # other processes' average CPU use above which a run is flagged


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def compare(server: dict[str, list[dict]], raw: dict[str, list[dict]]) -> list[dict[str, Any]]:
    """One row per endpoint and level: the server figure, the raw one at the same batch
    size, and their ratio (server / raw)."""
    rows = []
    for endpoint, levels in server.items():
        raw_by_batch = {p["batch"]: p for p in raw.get(endpoint, [])}
        for level in levels:
            point = raw_by_batch.get(level["concurrency"])
            raw_tps = point["tokens_per_s"] if point else None
            raw_prefill_ms = round(point["prefill_first_token_s"] * 1000, 2) if point else None
            # raw time per output token after the first, the counterpart of TPOT
            raw_tpot_ms = None
            if point and point["new_tokens"] > 1:
                raw_tpot_ms = round((point["generate_s"] - point["prefill_first_token_s"]) * 1000
                                    / (point["new_tokens"] - 1), 2)
            rows.append({
                "endpoint": endpoint,
                "concurrency": level["concurrency"],
                "server_tokens_per_s": level["output_tokens_per_s"],
                "raw_tokens_per_s": raw_tps,
                "tokens_per_s_ratio": _ratio(level["output_tokens_per_s"], raw_tps),
                "server_ttft_p50_ms": level["ttft_ms"]["p50"],
                "raw_prefill_first_token_ms": raw_prefill_ms,
                "ttft_ratio": _ratio(level["ttft_ms"]["p50"], raw_prefill_ms),
                "server_tpot_p50_ms": level["tpot_ms"]["p50"],
                "raw_tpot_ms": raw_tpot_ms,
                "tpot_ratio": _ratio(level["tpot_ms"]["p50"], raw_tpot_ms),
                "failures": level["failures"],
            })
    return rows


def targets(rows: list[dict[str, Any]], memory: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The issue's targets that one run can check (the comparison with `transformers
    serve` needs a second run against it: see docs/benchmarks/index.md)."""
    out = []
    for row in rows:
        where = f"{row['endpoint']} c={row['concurrency']}"
        for level, minimum in THROUGHPUT_TARGETS:
            if row["concurrency"] == level and row["tokens_per_s_ratio"] is not None:
                out.append({"target": f"{where}: tok/s >= {minimum}x raw", "value": row["tokens_per_s_ratio"],
                            "met": row["tokens_per_s_ratio"] >= minimum})
        if row["concurrency"] == TTFT_TARGET[0] and row["ttft_ratio"] is not None:
            out.append({"target": f"{where}: TTFT p50 <= {TTFT_TARGET[1]}x raw prefill+first token",
                        "value": row["ttft_ratio"], "met": row["ttft_ratio"] <= TTFT_TARGET[1]})
    failures = sum(row["failures"] for row in rows)
    out.append({"target": "no failures at any level", "value": failures, "met": failures == 0})
    if memory and memory.get("rss_mb") is not None:
        out.append({"target": f"server RSS with both default models loaded < {RSS_TARGET_MB:.0f} MB",
                    "value": memory["rss_mb"], "met": memory["rss_mb"] < RSS_TARGET_MB})
    return out


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def render_table(results: dict[str, Any]) -> str:
    """The run as text: per endpoint one line per level, then memory, cold start, targets."""
    meta = results["meta"]
    lines = [
        f"gpt3dev benchmark  {meta['started_at']}  model {meta['model']}  "
        f"raw: {meta.get('raw_model', {}).get('dtype', '-')} on {meta.get('raw_model', {}).get('device', '-')}  "
        f"{meta['max_tokens']} max tokens  {meta['cpu_count']} CPUs  server {meta['base_url']}",
    ]
    server = results["server"]
    levels_by_key = {(lvl["endpoint"], lvl["concurrency"]): lvl for lvls in server.values() for lvl in lvls}
    header = (f"{'conc':>4} {'reqs':>4} {'fail':>4} {'req/s':>6} {'tok/s':>7} {'raw':>7} {'ratio':>5}  "
              f"{'TTFT50':>7} {'TTFT99':>7} {'rawTTFT':>7} {'ratio':>5}  "
              f"{'TPOT50':>6} {'TPOT99':>6} {'rawTPOT':>7} {'ratio':>5}  {'ITL50':>6} {'E2E50':>7}")
    for endpoint in server:
        lines += ["", f"{ENDPOINT_TITLES.get(endpoint, endpoint)}  (tok/s: aggregate output tokens/s; times in ms)",
                  header]
        for row in (r for r in results["comparison"] if r["endpoint"] == endpoint):
            lvl = levels_by_key[(endpoint, row["concurrency"])]
            lines.append(
                f"{row['concurrency']:>4} {lvl['requests']:>4} {lvl['failures']:>4} "
                f"{_fmt(lvl['requests_per_s'], '.2f'):>6} {_fmt(row['server_tokens_per_s']):>7} "
                f"{_fmt(row['raw_tokens_per_s']):>7} {_fmt(row['tokens_per_s_ratio'], '.2f'):>5}  "
                f"{_fmt(lvl['ttft_ms']['p50']):>7} {_fmt(lvl['ttft_ms']['p99']):>7} "
                f"{_fmt(row['raw_prefill_first_token_ms']):>7} {_fmt(row['ttft_ratio'], '.2f'):>5}  "
                f"{_fmt(lvl['tpot_ms']['p50']):>6} {_fmt(lvl['tpot_ms']['p99']):>6} "
                f"{_fmt(row['raw_tpot_ms']):>7} {_fmt(row['tpot_ratio'], '.2f'):>5}  "
                f"{_fmt(lvl['itl_ms']['p50']):>6} {_fmt(lvl['e2e_ms']['p50']):>7}"
            )
    if results.get("constrained"):
        from .structured import render

        lines += render(results["constrained"])
    if results.get("responses"):
        from .responses import render as render_responses

        lines += render_responses(results["responses"])
    memory = results.get("memory")
    if memory:
        parts = [f"{name.replace('_', ' ')} {m['rss_mb']} MB resident (peak {m.get('peak_rss_mb', '-')})"
                 for name, m in memory.items() if isinstance(m, dict)]
        lines += ["", "server memory: " + "; ".join(parts)]
    cold = results.get("cold_start")
    if cold:
        parts = [f"{name}: healthz {c['healthz_s']} s, first answer {c['first_answer_s']} s"
                 for name, c in cold.items()]
        lines += ["cold start (process start ->) " + "; ".join(parts)]
    load = meta.get("background_load") or {}
    if (load.get("other_processes_cores") or 0) > BUSY_MACHINE_CORES:
        lines += ["", f"WARNING: other processes used {load['other_processes_cores']} cores on average during "
                  "this run: its figures are noise (benchmark a quiet machine)"]
    if results.get("targets"):
        lines += ["", "targets:"]
        lines += [f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['value']}" for t in results["targets"]]
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2) + "\n")


def plot(results: dict[str, Any], path: Path) -> None:
    """Two panels: aggregate output tokens/s and TTFT p50 against concurrency, each
    endpoint of the server beside the raw model at the same batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tps, ax_ttft) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"completions": "tab:blue", "chat": "tab:orange"}
    for endpoint, levels in results["server"].items():
        title = ENDPOINT_TITLES.get(endpoint, endpoint)
        colour = colours.get(endpoint)
        xs = [lvl["concurrency"] for lvl in levels]
        ax_tps.plot(xs, [lvl["output_tokens_per_s"] for lvl in levels], "o-", color=colour, label=f"server {title}")
        ax_ttft.plot(xs, [lvl["ttft_ms"]["p50"] for lvl in levels], "o-", color=colour, label=f"server {title} p50")
        raw = results.get("raw", {}).get(endpoint)
        if raw:
            bx = [p["batch"] for p in raw]
            ax_tps.plot(bx, [p["tokens_per_s"] for p in raw], "s--", color=colour, alpha=0.6,
                        label=f"raw generate ({endpoint} prompts)")
            ax_ttft.plot(bx, [p["prefill_first_token_s"] * 1000 for p in raw], "s--", color=colour, alpha=0.6,
                         label=f"raw prefill+first token ({endpoint} prompts)")
    meta = results["meta"]
    for ax, ylabel in ((ax_tps, "output tokens/s (aggregate)"), (ax_ttft, "TTFT (ms)")):
        ax.set_xlabel("concurrency (server) / batch size (raw)")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        ax.set_xticks(meta["levels"], [str(x) for x in meta["levels"]])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    ax_tps.set_ylim(bottom=0)
    ax_ttft.set_ylim(bottom=0)
    raw_model = meta.get("raw_model", {})
    fig.suptitle(f"{meta['model']} ({raw_model.get('dtype', '?')}, {raw_model.get('device', '?')}), "
                 f"{meta['max_tokens']} new tokens, {meta['cpu_count']} CPUs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
