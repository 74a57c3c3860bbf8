"""`python -m bench --ledger` measures a request with and without the ledger in one run
(not a timed test: no speed asserts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.server import ROOT

pytestmark = pytest.mark.e2e


def test_bench_ledger_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run([sys.executable, "-m", "bench", "--ledger", "--quick", "--no-progress", "--out",
                             str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ledger: GET /v1/models p50" in result.stdout
    ledger = json.loads((tmp_path / "results.json").read_text())["ledger"]
    assert ledger["requests"] == 200 and ledger["database"] == "sqlite"
    assert ledger["without_ms"] > 0 and ledger["with_ms"] > 0 and ledger["each_request_ms"] > 0
    # every request with the ledger (400: batched and written at once) is in the anonymous rows
    assert ledger["recorded"] == 2 * 200 + 50
