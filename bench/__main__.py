"""``python -m bench``: the raw model and the server, measured in one run.

1. load the raw model in this process (as the engine loads it);
2. cold start of a fresh server without the model cache (GGUF conversion included),
   then of the server the run measures, with the cache: process start to first answer;
3. warm-up (one chat and one embeddings request, so both default models are loaded),
   the server's resident memory;
4. level by level: raw padded ``generate`` at that batch size, then streaming requests
   at that concurrency, for each endpoint;
5. with ``--dtypes``, the same server again in each other CPU dtype (:mod:`bench.dtypes`);
6. the quality evaluation per dtype (:mod:`bench.quality`), in this process;
7. the table (printed), ``results.json`` and ``bench.png`` in ``--out``.

With ``--base-url`` it drives an already-running OpenAI-compatible server instead
(no cold start; memory only with ``--pid``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from . import client, dtypes, ledger, quality, raw, report, responses, structured
from .background import BackgroundLoad
from .server import ROOT, UvicornServer, first_answer, measure_cold_start, own_database, resident_memory

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench",
                                     description="The server against the raw model it serves, in one run.")
    parser.add_argument("--base-url", help="benchmark this running OpenAI-compatible server (e.g. "
                        "http://127.0.0.1:8000) instead of starting ours")
    parser.add_argument("--pid", type=int, help="with --base-url: the server's process id, to read its memory "
                        "(and not count its CPU as other load)")
    parser.add_argument("--api-key", help="bearer token to send (a server with REQUIRE_API_KEY)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model id sent to the server (default %(default)s)")
    parser.add_argument("--embedding-model", default=DEFAULT_EMBEDDING_MODEL,
                        help="warm-up embeddings model ('' to skip; default %(default)s)")
    parser.add_argument("--raw-model", help="registry id of the raw model when --model names it "
                        "differently on another server (default: --model)")
    parser.add_argument("--raw-source", help="raw model source TYPE:SOURCE (package:pkg/file.gguf, "
                        "local:/path, hub:owner/repo) for models outside the default registry")
    parser.add_argument("--levels", default="1,4,8,16",
                        help="concurrency levels = raw batch sizes (default %(default)s)")
    parser.add_argument("--requests-per-level", type=int,
                        help="requests per level (default: 4x the concurrency, at least 8)")
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens per request (default %(default)s)")
    parser.add_argument("--endpoints", default="completions,chat", help="completions,chat (default %(default)s)")
    parser.add_argument("--no-ignore-eos", action="store_true",
                        help="do not send ignore_eos (requests may then stop before --max-tokens)")
    parser.add_argument("--constrained-levels", default="1,8",
                        help="concurrency levels of the json_schema chat vs plain chat scenario "
                        "('' to skip; default %(default)s)")
    parser.add_argument("--responses-levels", default="1,8",
                        help="concurrency levels of the streamed /v1/responses vs chat scenario "
                        "('' to skip; default %(default)s)")
    parser.add_argument("--raw-repeats", type=int, default=3, help="raw timings are medians of this many runs")
    parser.add_argument("--skip-raw", action="store_true", help="no raw measurement (no ratios)")
    parser.add_argument("--skip-cold-start", action="store_true", help="no cold-start measurement")
    parser.add_argument("--dtypes", default="", help="also run the server in these CPU dtypes (CPU_DTYPE), e.g. "
                        "int8,int4, and compare each with the main server (default: none)")
    parser.add_argument("--quality-dtypes", default=",".join(quality.DEFAULT_DTYPES),
                        help="dtypes of the quality evaluation (default %(default)s; '' to skip)")
    parser.add_argument("--out", default="bench-results", help="folder for results.json, bench.png, server logs")
    parser.add_argument("--quick", action="store_true", help="smoke run: concurrency 1, 2 requests, 4 tokens, "
                        "one raw repeat, no cold start without the cache")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--kv", action="store_true", help="only the KV-cache and scheduling scenarios (prefix "
                        "reuse, chunked prefill, long context, fairness), in this process; with --quick at 1/10 size")
    parser.add_argument("--gateway", action="store_true", help="only the gateway scenario: the upstream "
                        "(--base-url, or a gpt3dev server it starts) direct and through a gpt3dev gateway, "
                        "at --gateway-levels")
    parser.add_argument("--soak", type=float, metavar="SECONDS", help="only the memory soak: 8 chat streams "
                        "without max_tokens for SECONDS (the KV-cache target uses 300), resident memory sampled")
    parser.add_argument("--gateway-levels", default="1,8", help="concurrency levels of --gateway (default %(default)s)")
    parser.add_argument("--ledger", action="store_true", help="only the usage ledger's cost: a small request's p50 "
                        "with and without the ledger, in one run on SQLite (also part of a full run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.levels = "1"
        args.requests_per_level = args.requests_per_level or 2
        args.max_tokens = 4 if args.max_tokens == 64 else args.max_tokens
        args.raw_repeats = 1
        if args.quality_dtypes == ",".join(quality.DEFAULT_DTYPES):
            args.quality_dtypes = "float32,int8"
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    args.quality_dtypes = tuple(d.strip() for d in args.quality_dtypes.split(",") if d.strip())
    for dtype in [*args.dtypes, *args.quality_dtypes]:
        if dtype not in dtypes.CPU_DTYPES:
            parser.error(f"unknown dtype {dtype!r}: choose from {', '.join(dtypes.CPU_DTYPES)}")
    if args.dtypes and args.base_url:
        parser.error("--dtypes starts our own servers: it does not combine with --base-url")
    args.levels = sorted({int(x) for x in str(args.levels).split(",") if x.strip()})
    args.endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    args.constrained_levels = [] if args.quick and args.constrained_levels == "1,8" else sorted(
        {int(x) for x in str(args.constrained_levels).split(",") if x.strip()})
    args.responses_levels = [] if args.quick and args.responses_levels == "1,8" else sorted(
        {int(x) for x in str(args.responses_levels).split(",") if x.strip()})
    for endpoint in args.endpoints:
        if endpoint not in client.ENDPOINT_PATHS:
            parser.error(f"unknown endpoint {endpoint!r}: choose from {', '.join(client.ENDPOINT_PATHS)}")
    if not args.levels or min(args.levels) < 1:
        parser.error("--levels needs positive integers")
    return args


def requests_for(args: argparse.Namespace, concurrency: int) -> int:
    return args.requests_per_level or max(8, 4 * concurrency)


class Progress:
    """One tqdm bar for the whole run; its description says the phase."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, disable=not enabled, unit="step", dynamic_ncols=True, file=sys.stderr)

    def phase(self, text: str) -> None:
        self.bar.set_description_str(text)

    def step(self, *_: Any) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def load_raw(args: argparse.Namespace, progress: Progress, results: dict[str, Any]) -> raw.RawModel | None:
    if args.skip_raw:
        return None
    progress.phase("raw: loading the model")
    model = raw.load_raw_model(args.raw_model or args.model, source=args.raw_source)
    results["meta"]["raw_model"] = model.describe()
    return model


def warm_up(base_url: str, args: argparse.Namespace, *, embeddings: bool) -> None:
    """Load the models and touch both endpoints once, outside the measurement."""
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=600, headers=headers) as http:
        if "chat" in args.endpoints or embeddings:
            http.post("/v1/chat/completions", json={"model": args.model, "max_tokens": 4, "temperature": 0,
                      "messages": [{"role": "user", "content": "Hello"}]}).raise_for_status()
        if embeddings and args.embedding_model:
            http.post("/v1/embeddings", json={"model": args.embedding_model, "input": "hello"}).raise_for_status()
    top = max(args.levels)
    for endpoint in args.endpoints:  # a short burst at the top level: allocator and batch shapes
        for _ in range(2):
            run = client.run_level(base_url, endpoint, top, top, model=args.model, max_tokens=min(4, args.max_tokens),
                                   ignore_eos=not args.no_ignore_eos, api_key=args.api_key)
            failed = [r.error or "" for r in run.results if not r.ok]
            if failed and not args.no_ignore_eos and "ignore_eos" in failed[0] and failed[0].startswith("HTTP 4"):
                # e.g. `transformers serve` refuses unknown fields: measure without it (and say so)
                print("note: the server refuses ignore_eos; requests may stop before --max-tokens", file=sys.stderr)
                args.no_ignore_eos = True
                continue
            break
        if failed:
            raise SystemExit(f"warm-up requests to {endpoint} failed: {failed[0]}")


def run_levels(base_url: str, args: argparse.Namespace, progress: Progress, raw_model: raw.RawModel | None,
               results: dict[str, Any]) -> None:
    """Level by level: the raw batch of that size, then the server at that concurrency,
    so slow drift in the machine's load hits both sides of a ratio alike."""
    results["raw"] = {endpoint: [] for endpoint in args.endpoints} if raw_model is not None else {}
    results["server"] = {endpoint: [] for endpoint in args.endpoints}
    for level in args.levels:
        if raw_model is not None:
            for endpoint in args.endpoints:
                progress.phase(f"raw generate batch {level} ({endpoint} prompts)")
                points = raw.measure_raw(raw_model, endpoint, [level], new_tokens=args.max_tokens,
                                         repeats=args.raw_repeats, progress=progress.step)
                results["raw"][endpoint] += raw.as_dicts(points)
        for endpoint in args.endpoints:
            progress.phase(f"server {endpoint} c={level}")
            run = client.run_level(base_url, endpoint, level, requests_for(args, level), model=args.model,
                                   max_tokens=args.max_tokens, ignore_eos=not args.no_ignore_eos,
                                   api_key=args.api_key, on_done=progress.step)
            results["server"][endpoint].append(client.summarize(run))
    if args.constrained_levels:
        def level_run(url: str, endpoint: str, level: int, count: int) -> Any:
            return client.run_level(url, endpoint, level, count, model=args.model, max_tokens=args.max_tokens,
                                    ignore_eos=not args.no_ignore_eos, api_key=args.api_key, on_done=progress.step)

        results["constrained"] = {"levels": structured.run_constrained(
            base_url, args.constrained_levels, lambda c: requests_for(args, c), run_level=level_run,
            summarize=client.summarize, on_phase=progress.phase)}
        if raw_model is not None:
            from inference.generator import eos_ids_of

            tok = raw_model.tokenizer
            eos_ids = eos_ids_of(raw_model.model, tok)
            results["constrained"]["compile"] = structured.measure_compile(tok, len(tok), eos_ids)
    if args.responses_levels:
        results["responses"] = {"levels": responses.run_responses(
            base_url, args.responses_levels, lambda c: requests_for(args, c), model=args.model,
            max_tokens=args.max_tokens, api_key=args.api_key, summarize=client.summarize, on_phase=progress.phase,
            on_done=progress.step)}


def ensure_model_cached(args: argparse.Namespace) -> None:
    """Convert the GGUF into MODEL_CACHE_DIR now, so 'with cache' means what it says."""
    source = raw.DEFAULT_SOURCES.get(args.model)
    if source is None:
        return
    from inference.loading import resolve_model_folder
    from inference.sources import is_offline
    from inference.types import ModelSpec

    spec = ModelSpec(id=args.model, task="text-generation", source_type=source[0], source=source[1])  # type: ignore[arg-type]
    resolve_model_folder(spec, raw.default_cache_dir(), is_offline(False))


def run_own_server(args: argparse.Namespace, progress: Progress, out: Path, raw_model: raw.RawModel | None,
                   results: dict[str, Any]) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="gpt3dev-bench-"))
    servers: list[UvicornServer] = []
    try:
        cold: dict[str, Any] = {}
        if not args.skip_cold_start and not args.quick:
            progress.phase("cold start without the model cache (GGUF conversion)")
            fresh = scratch / "no-cache"
            server = UvicornServer(fresh, **own_database(fresh),
                                   MODEL_CACHE_DIR=str(fresh / "models"))
            servers.append(server)
            server.migrate()
            cold["without_model_cache"] = measure_cold_start(server, args.model)
            server.stop()
            shutil.copy(server.log_path, out / "server-no-cache.log")
        ensure_model_cached(args)
        main = scratch / "main"
        server = UvicornServer(main, **own_database(main))
        servers.append(server)
        progress.phase("starting the server")
        migrate_s = server.migrate()
        if args.skip_cold_start:
            server.launch()
            server.wait_healthy(300)
            first_answer(server.base_url, args.model)
        else:
            cold["with_model_cache"] = measure_cold_start(server, args.model)
        if cold:
            results["cold_start"] = cold
        progress.phase("warm-up")
        warm_up(server.base_url, args, embeddings=bool(args.embedding_model))
        memory: dict[str, Any] = {"after_warmup": resident_memory(server.pid)}  # type: ignore[arg-type]
        run_levels(server.base_url, args, progress, raw_model, results)
        if args.dtypes:  # the baseline of the other dtypes' c=1 runs by prompt length
            progress.phase("server c=1 by prompt length")
            results["prompt_lengths"] = dtypes.run_prompt_lengths(server.base_url, args, progress.step)
        memory["after_load"] = resident_memory(server.pid)  # type: ignore[arg-type]
        memory["rss_mb"] = memory["after_warmup"]["rss_mb"]
        results["memory"] = memory
        results["meta"]["migrate_s"] = round(migrate_s, 3)
        server.stop()  # the other dtypes' servers never share the CPUs with it
        for dtype in args.dtypes:
            progress.phase(f"server in {dtype}")
            results.setdefault("dtypes", {})[dtype] = dtypes.run_dtype_server(
                dtype, scratch / f"dtype-{dtype}", args, warm_up, progress.step)
    finally:
        for server in servers:
            server.stop()
        if servers and servers[-1].log_path.exists():
            shutil.copy(servers[-1].log_path, out / "server.log")
        shutil.rmtree(scratch, ignore_errors=True)


def run_external_server(args: argparse.Namespace, progress: Progress, raw_model: raw.RawModel | None,
                        results: dict[str, Any]) -> None:
    progress.phase("warm-up")
    warm_up(args.base_url, args, embeddings=False)
    memory: dict[str, Any] = {}
    if args.pid:
        memory["after_warmup"] = resident_memory(args.pid)
        memory["rss_mb"] = memory["after_warmup"]["rss_mb"]
    run_levels(args.base_url, args, progress, raw_model, results)
    if args.pid:
        memory["after_load"] = resident_memory(args.pid)
        results["memory"] = memory


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {"meta": {
        "started_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "git_commit": _git_commit(),
        "model": args.model,
        "base_url": args.base_url or "started by the benchmark (uvicorn, default settings)",
        "levels": args.levels,
        "requests_per_level": {str(c): requests_for(args, c) for c in args.levels},
        "max_tokens": args.max_tokens,
        "ignore_eos": not args.no_ignore_eos,
        "temperature": 0.0,
        "endpoints": args.endpoints,
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "server_cpu_dtype": os.environ.get("CPU_DTYPE", "float32"),
        "python": platform.python_version(),
    }}
    raw_steps = 0 if args.skip_raw else len(args.endpoints) * len(args.levels)
    total = raw_steps + (1 + len(args.dtypes)) * len(args.endpoints) * sum(requests_for(args, c) for c in args.levels)
    total += 2 * sum(requests_for(args, c) for c in args.constrained_levels)
    total += 2 * sum(requests_for(args, c) for c in args.responses_levels)
    if args.dtypes:  # c=1 by prompt length, on the main server and each dtype's
        total += (1 + len(args.dtypes)) * len(dtypes.PROMPT_LENGTHS) * (args.requests_per_level or 4)
    progress = Progress(total, enabled=not args.no_progress)
    background = BackgroundLoad(server_pid=args.pid if args.base_url else None)
    if args.kv:
        return run_kv(args, out, results, background, started)
    if args.gateway:
        return run_gateway(args, out, results, background, started)
    if args.soak:
        return run_soak(args, out, results, background, started)
    if args.ledger:
        results["ledger"] = ledger.run(200 if args.quick else 2000)
        _scenario_done(out, results, background, started, ledger.render(results["ledger"]))
        return 0
    try:
        raw_model = load_raw(args, progress, results)
        import importlib.metadata as md

        for package in ("torch", "transformers"):
            try:
                results["meta"][f"{package}_version"] = md.version(package)
            except md.PackageNotFoundError:
                pass
        if args.base_url:
            run_external_server(args, progress, raw_model, results)
        else:
            run_own_server(args, progress, out, raw_model, results)
        if args.quality_dtypes:
            progress.phase("quality per dtype")
            quick = {"tokens": 4, "prompts": 1} if args.quick else {}
            results["quality"] = quality.evaluate(args.raw_model or args.model, dtypes=args.quality_dtypes,
                                                  source=args.raw_source, **quick)
        if not args.base_url:
            progress.phase("usage ledger cost")
            results["ledger"] = ledger.run(200 if args.quick else 2000)
    finally:
        progress.close()
    results["meta"]["ignore_eos"] = not args.no_ignore_eos
    results["meta"]["background_load"] = background.result()
    results["comparison"] = report.compare(results["server"], results["raw"])
    results["targets"] = report.targets(results["comparison"], results.get("memory"))
    results["meta"]["duration_s"] = round(time.perf_counter() - started, 1)
    results["dtype_comparison"] = dtypes.compare(results)
    report.write_json(results, out / "results.json")
    report.plot(results, out / "bench.png")
    print(report.render_table(results))
    print(dtypes.render(results))
    if results.get("quality"):
        print("\n" + quality.render(results["quality"]))
    if results.get("ledger"):
        print("\n" + ledger.render(results["ledger"]))
    print(f"\nwrote {out / 'results.json'} and {out / 'bench.png'} in {results['meta']['duration_s']} s")
    failures = sum(row["failures"] for row in results["comparison"])
    return 1 if failures else 0


def _scenario_done(out: Path, results: dict[str, Any], background: BackgroundLoad, started: float,
                   text: str) -> None:
    """The end of a single-scenario run: its load note, results.json and its table."""
    results["meta"]["background_load"] = background.result()
    results["meta"]["duration_s"] = round(time.perf_counter() - started, 1)
    report.write_json(results, out / "results.json")
    print(text)
    load = results["meta"]["background_load"] or {}
    print(f"\nother processes (outside this benchmark and the servers it starts) used "
          f"{load.get('other_processes_cores', '-')} cores on average during this run")
    print(f"wrote {out / 'results.json'} in {results['meta']['duration_s']} s")


def run_gateway(args: argparse.Namespace, out: Path, results: dict[str, Any], background: BackgroundLoad,
                started: float) -> int:
    from . import gateway

    levels = [1] if args.quick else sorted({int(x) for x in args.gateway_levels.split(",") if x.strip()})
    results["gateway"] = gateway.run(args, levels, requests_for)
    results["targets"] = gateway.targets(results["gateway"])
    _scenario_done(out, results, background, started, gateway.render(results["gateway"]))
    failures = sum(row[side]["failures"] for row in results["gateway"]["levels"] for side in ("direct", "gateway"))
    return 1 if failures else 0


def run_soak(args: argparse.Namespace, out: Path, results: dict[str, Any], background: BackgroundLoad,
             started: float) -> int:
    from . import soak

    results["soak"] = soak.run(args.model, args.soak)
    _scenario_done(out, results, background, started, soak.render(results["soak"]))
    return 0 if results["soak"]["failures"] == 0 else 1


def run_kv(args: argparse.Namespace, out: Path, results: dict[str, Any], background: BackgroundLoad,
           started: float) -> int:
    from . import kv
    from .raw import default_cache_dir

    results["kv_scenarios"] = kv.run_all(default_cache_dir(), quick=args.quick)
    results["targets"] = [{"target": f"{r['scenario']}: {r['target']}", "value": r["ratio"], "met": r["met"]}
                          for r in results["kv_scenarios"] if r.get("met") is not None]
    _scenario_done(out, results, background, started, kv.render(results["kv_scenarios"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
