"""``python -m bench --gateway``: the same upstream server measured direct and through a
gpt3dev gateway whose registry row forwards to it, in one run.

The upstream is ``--base-url`` (any OpenAI-compatible server serving ``--model``) or,
without it, a gpt3dev server this run starts. Every server started here has its own
SQLite database, whatever ``DATABASE_URL`` says: a gateway sharing its upstream's
registry would turn the upstream's own row into an upstream row (a loop). The gateway is a second gpt3dev process
with one ``upstream`` row named like the model, so both are sent identical requests.
Each concurrency level runs direct, gateway, gateway, direct (so slow drift of the
machine does not favour either side), and the figures are the sums and medians of both
runs of each side. On a small machine the gateway and the upstream share the CPUs; a
real deployment has them on different machines, so the ratio here is a floor. What the
gateway itself adds is measured last, against an upstream that answers at once
(:mod:`bench.fake_upstream`), with no model on the CPUs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from . import client
from .server import UvicornServer, first_answer, own_database

TARGETS = {"throughput": 0.95, "added_ttft_ms": 10.0}


def _run(base_url: str, args: argparse.Namespace, concurrency: int, requests: int) -> client.LevelRun:
    return client.run_level(base_url, "completions", concurrency, requests, model=args.model,
                            max_tokens=args.max_tokens, ignore_eos=not args.no_ignore_eos, api_key=args.api_key)


def _side(runs: list[client.LevelRun]) -> dict[str, Any]:
    ok = [r for run in runs for r in run.results if r.ok]
    tokens = sum(r.output_tokens for r in ok)
    wall = sum(run.wall_s for run in runs)
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    return {
        "tok_s": round(tokens / wall, 2) if wall else None,
        "ttft_p50_ms": round(statistics.median(ttft) * 1000, 2) if ttft else None,
        "failures": sum(len(run.results) for run in runs) - len(ok),
    }


def measure(direct_url: str, gateway_url: str, args: argparse.Namespace, levels: list[int],
            requests_for) -> list[dict[str, Any]]:
    rows = []
    for concurrency in levels:
        n = requests_for(args, concurrency)
        _run(gateway_url, args, concurrency, min(n, concurrency))  # both sides warm: connections, caches
        _run(direct_url, args, concurrency, min(n, concurrency))
        order = ("direct", "gateway", "gateway", "direct")
        runs: dict[str, list[client.LevelRun]] = {"direct": [], "gateway": []}
        for side in order:
            runs[side].append(_run(direct_url if side == "direct" else gateway_url, args, concurrency, n))
        direct, gateway = _side(runs["direct"]), _side(runs["gateway"])
        ratio = gateway["tok_s"] / direct["tok_s"] if direct["tok_s"] and gateway["tok_s"] else None
        added = (gateway["ttft_p50_ms"] - direct["ttft_p50_ms"]
                 if gateway["ttft_p50_ms"] is not None and direct["ttft_p50_ms"] is not None else None)
        rows.append({"concurrency": concurrency, "requests_per_run": n, "direct": direct, "gateway": gateway,
                     "throughput_ratio": round(ratio, 3) if ratio is not None else None,
                     "added_ttft_p50_ms": round(added, 2) if added is not None else None})
    return rows


def _first_event_ms(url: str, model: str, count: int) -> float:
    """Median time to the first streamed event of ``count`` one-token completions, sent
    one after another on a kept-alive connection."""
    body = {"model": model, "prompt": "x", "max_tokens": 1, "stream": True}
    times = []
    with httpx.Client(timeout=30) as http:
        for _ in range(count + 5):  # the first five warm up
            start = time.perf_counter()
            with http.stream("POST", url, json=body) as response:
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        times.append(time.perf_counter() - start)
                        break
    return statistics.median(times[5:]) * 1000


def overhead(scratch: Path, count: int = 50) -> dict[str, Any]:
    """What the gateway itself adds to a request, with an upstream that answers at once
    (:mod:`bench.fake_upstream`), so no model shares the CPUs with the gateway."""
    from .fake_upstream import FaultServer

    fake = FaultServer(name="instant").start()
    registry = scratch / "instant.json"
    registry.write_text(json.dumps({"models": [{"name": "instant", "upstream": fake.base_url, "timeout": 60}]}))
    gateway = UvicornServer(scratch / "gateway-instant", MODEL_REGISTRY_PATH=str(registry), LOG_LEVEL="warning",
                            ACCESS_LOG_FORMAT="off", UPSTREAM_ALLOWED_HOSTS="127.0.0.1",
                            **own_database(scratch / "gateway-instant"))
    try:
        gateway.start(300)
        direct = _first_event_ms(f"{fake.base_url}/completions", "instant", count)
        through = _first_event_ms(f"{gateway.base_url}/v1/completions", "instant", count)
    finally:
        gateway.stop()
        fake.stop()
    return {"requests": count, "direct_ms": round(direct, 2), "gateway_ms": round(through, 2),
            "added_ms": round(through - direct, 2)}


def run(args: argparse.Namespace, levels: list[int], requests_for) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="gpt3dev-bench-gateway-"))
    servers: list[UvicornServer] = []
    try:
        upstream_url = args.base_url
        if not upstream_url:
            upstream = UvicornServer(scratch / "upstream", LOG_LEVEL="warning", **own_database(scratch / "upstream"))
            servers.append(upstream.start(300))
            upstream_url = upstream.base_url
        registry = scratch / "registry.json"
        registry.write_text(json.dumps({"models": [
            {"name": args.model, "upstream": f"{upstream_url.rstrip('/')}/v1", "is_chat": True, "timeout": 600},
        ]}))
        # The upstream is on loopback (or wherever --base-url says): list it for the URL policy.
        allowed = ",".join({"127.0.0.1", urlsplit(upstream_url).hostname or "127.0.0.1"})
        gateway = UvicornServer(scratch / "gateway", MODEL_REGISTRY_PATH=str(registry), LOG_LEVEL="warning",
                                ACCESS_LOG_FORMAT="off", UPSTREAM_ALLOWED_HOSTS=allowed,
                                **own_database(scratch / "gateway"))
        servers.append(gateway.start(300))
        first_answer(gateway.base_url, args.model)
        rows = measure(upstream_url, gateway.base_url, args, levels, requests_for)
        for server in servers:
            server.stop()  # nothing else on the CPUs while the gateway's own cost is measured
        instant = overhead(scratch, 10 if args.quick else 50)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"upstream": args.base_url or "a gpt3dev server started by the benchmark", "levels": rows,
            "instant_upstream": instant}


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets: c=8 tok/s through the gateway >= 0.95x direct, and the added
    TTFT p50 <= 10 ms (at every level measured)."""
    out = []
    for row in result["levels"]:
        c = row["concurrency"]
        if c == 8 and row["throughput_ratio"] is not None:
            out.append({"target": f"gateway c=8 tok/s >= {TARGETS['throughput']}x direct",
                        "value": row["throughput_ratio"], "met": row["throughput_ratio"] >= TARGETS["throughput"]})
        if row["added_ttft_p50_ms"] is not None:
            out.append({"target": f"gateway c={c} added TTFT p50 <= {TARGETS['added_ttft_ms']} ms",
                        "value": row["added_ttft_p50_ms"], "met": row["added_ttft_p50_ms"] <= TARGETS["added_ttft_ms"]})
    return out


def render(result: dict[str, Any]) -> str:
    lines = [f"Gateway vs direct (upstream: {result['upstream']}), streaming /v1/completions",
             f"{'c':>3} {'direct tok/s':>13} {'gateway tok/s':>14} {'ratio':>6} {'TTFT p50 direct':>16} "
             f"{'gateway':>8} {'added':>7}"]
    for row in result["levels"]:
        d, g = row["direct"], row["gateway"]
        lines.append(f"{row['concurrency']:>3} {d['tok_s']!s:>13} {g['tok_s']!s:>14} {row['throughput_ratio']!s:>6} "
                     f"{d['ttft_p50_ms']!s:>13} ms {g['ttft_p50_ms']!s:>5} ms {row['added_ttft_p50_ms']!s:>4} ms")
    instant = result.get("instant_upstream")
    if instant:
        lines.append(f"  with an upstream that answers at once ({instant['requests']} one-token streams in a row): "
                     f"first event {instant['direct_ms']} ms direct, {instant['gateway_ms']} ms through the gateway, "
                     f"{instant['added_ms']} ms added")
    for target in targets(result):
        lines.append(f"  {'met' if target['met'] else 'MISSED'}: {target['target']} (got {target['value']})")
    return "\n".join(lines)
