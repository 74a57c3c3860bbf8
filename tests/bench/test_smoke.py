"""The benchmark runs end to end at one tiny level (not a timed test: no speed asserts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.server import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.model, pytest.mark.perf]


def test_bench_quick_run_writes_results_and_plot(tmp_path):
    out = tmp_path / "bench"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--constrained-levels", "1", "--no-progress",
         "--dtypes", "int8", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "/v1/chat/completions" in result.stdout and "targets:" in result.stdout

    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["levels"] == [1] and results["meta"]["max_tokens"] == 4
    assert results["meta"]["raw_model"]["dtype"] in {"float32", "bfloat16", "float16"}
    for endpoint in ("completions", "chat"):
        (raw,) = results["raw"][endpoint]
        assert raw["batch"] == 1 and raw["tokens_per_s"] > 0 and raw["prefill_first_token_s"] > 0
        (level,) = results["server"][endpoint]
        assert level["concurrency"] == 1 and level["requests"] == 2
        assert level["failures"] == 0 and level["completed"] == 2
        assert level["output_tokens"] == 8 and level["usage_reported"]  # ignore_eos: all 4 tokens
        assert level["output_tokens_per_s"] > 0 and level["requests_per_s"] > 0
        for metric in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
            assert level[metric]["p50"] > 0 and level[metric]["p99"] >= level[metric]["p50"]
    rows = results["comparison"]
    assert {row["endpoint"] for row in rows} == {"completions", "chat"}
    assert all(row["tokens_per_s_ratio"] > 0 and row["ttft_ratio"] > 0 for row in rows)
    memory = results["memory"]
    assert memory["after_warmup"]["rss_mb"] > 100 and memory["rss_mb"] == memory["after_warmup"]["rss_mb"]
    warm_start = results["cold_start"]["with_model_cache"]
    assert warm_start["first_answer_s"] >= warm_start["healthz_s"] > 0
    assert any(t["target"] == "no failures at any level" and t["met"] for t in results["targets"])
    (constrained,) = results["constrained"]["levels"]
    assert constrained["concurrency"] == 1 and constrained["tpot_p50_ratio"] > 0
    assert constrained["plain"]["failures"] == 0 and constrained["json_schema"]["failures"] == 0
    assert constrained["json_schema"]["output_tokens"] > 0
    compile_ = results["constrained"]["compile"]
    assert compile_["tokenizer_info_ms"] > 0
    assert all(c["cold_ms"] > 0 and c["cached_ms"] >= 0 for c in compile_["schemas"].values())
    assert "constrained decoding: json_schema chat vs plain chat" in result.stdout
    png = (out / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert (out / "server.log").exists()

    # the server again in int8 (CPU_DTYPE), beside the main one, and the quality table
    int8 = results["dtypes"]["int8"]
    assert int8["memory"]["rss_mb"] > 100 and int8["cold_start"]["with_model_cache"]["first_answer_s"] > 0
    compared = {(r["dtype"], r["endpoint"]) for r in results["dtype_comparison"]}
    lengths = {("int8", f"prompt~{n}") for n in (4, 16, 64, 256)}  # c=1 by prompt length, short ones too
    assert compared == {("int8", "completions"), ("int8", "chat")} | lengths
    shortest = next(r for r in results["dtype_comparison"] if r["endpoint"] == "prompt~4")
    assert shortest["prompt_tokens"] <= 8
    assert [r["prompt_length"] for r in results["prompt_lengths"]] == [4, 16, 64, 256]
    assert all(r["tokens_per_s_ratio"] > 0 and r["failures"] == 0 for r in results["dtype_comparison"])
    assert "other CPU dtypes against the main" in result.stdout
    f32, q8 = results["quality"]
    assert (f32["dtype"], q8["dtype"]) == ("float32", "int8") and q8["weights"] == "int8"
    assert f32["identical"] == f32["prompts"] == 1 and f32["perplexity_ratio"] == 1.0
    assert 1 < q8["perplexity"] < 100 and "quality vs float32" in result.stdout


def test_bench_gateway_scenario_runs_both_sides(tmp_path):
    out = tmp_path / "bench-gateway"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run([sys.executable, "-m", "bench", "--gateway", "--quick", "--no-progress", "--out", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Gateway vs direct" in result.stdout and "added TTFT p50" in result.stdout
    (level,) = json.loads((out / "results.json").read_text())["gateway"]["levels"]
    assert level["concurrency"] == 1
    for side in ("direct", "gateway"):
        assert level[side]["failures"] == 0 and level[side]["tok_s"] > 0 and level[side]["ttft_p50_ms"] > 0
    assert level["throughput_ratio"] > 0
    instant = json.loads((out / "results.json").read_text())["gateway"]["instant_upstream"]
    assert instant["requests"] == 10 and instant["direct_ms"] > 0 and instant["gateway_ms"] > 0
