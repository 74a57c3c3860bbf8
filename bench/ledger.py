"""What the usage ledger adds to a request: the p50 of one small API request without the
ledger's subscriber, with it (sums batched, the default) and with it writing each
request (``USAGE_FLUSH_SECONDS=0``), in one run, on SQLite.

Runs in a child process (``python -m bench.ledger``) with Django set up on a fresh
SQLite database in a scratch folder, so the benchmark's own process stays free of
Django. Requests go through the whole middleware stack (Django's test client, no
network): ``GET /v1/models`` on an open server, whose end runs the usage consumers in
the request. The three kinds take turns in a shuffled order, request by request, so
drift in the machine's load falls on all alike.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .server import ROOT


def run(requests: int = 2000) -> dict[str, Any]:
    """Measure in a child process; returns its results."""
    with tempfile.TemporaryDirectory(prefix="gpt3dev-bench-ledger-") as scratch:
        env = {**os.environ, "GPT3DEV_VAR_DIR": scratch, "DATABASE_URL": f"sqlite:///{Path(scratch) / 'db.sqlite3'}",
               "ACCESS_LOG_FORMAT": "off", "METRICS_ENABLED": "1", "LOG_LEVEL": "warning"}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        done = subprocess.run([sys.executable, "-m", "bench.ledger", str(requests)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=1800)
        if done.returncode:
            raise RuntimeError(f"the ledger measurement failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def render(result: dict[str, Any]) -> str:
    return (f"ledger: GET /v1/models p50 {result['without_ms']:.3f} ms without the ledger, "
            f"{result['with_ms']:.3f} ms with it ({result['added_ms']:+.3f} ms; sums written every "
            f"{result['flush_seconds']} s), {result['each_request_ms']:.3f} ms writing each request "
            f"({result['each_request_added_ms']:+.3f} ms; USAGE_FLUSH_SECONDS=0); "
            f"{result['requests']} requests each, {result['database']}, {result['rows']} ledger row(s)")


def _measure(requests: int) -> dict[str, Any]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpt3dev.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Sum
    from django.test import Client

    from core import usage
    from ledger.models import UsageRow
    from ledger.recorder import flush, record

    call_command("migrate", verbosity=0)
    client = Client(HTTP_HOST="127.0.0.1")
    for _ in range(50):  # warm-up: imports, the registry, the first rows
        client.get("/v1/models")
    conf = settings.GPT3DEV
    batched = conf["USAGE_FLUSH_SECONDS"] or 1
    kinds = ("without", "with", "each_request")  # no ledger; the default (batched); USAGE_FLUSH_SECONDS=0
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    rng = random.Random(0)
    order = [kind for _ in range(requests) for kind in rng.sample(kinds, len(kinds))]
    for kind in order:
        usage.unsubscribe(record)
        if kind != "without":  # subscribed as LedgerConfig.ready does for each setting
            conf["USAGE_FLUSH_SECONDS"] = batched if kind == "with" else 0
            usage.subscribe(record, database=kind == "each_request")
        start = time.perf_counter()
        answer = client.get("/v1/models")
        times[kind].append(time.perf_counter() - start)
        assert answer.status_code == 200
    usage.subscribe(record)
    flush()
    p50 = {kind: statistics.median(values) * 1000 for kind, values in times.items()}
    return {"requests": requests, "without_ms": round(p50["without"], 4), "with_ms": round(p50["with"], 4),
            "added_ms": round(p50["with"] - p50["without"], 4), "flush_seconds": batched,
            "each_request_ms": round(p50["each_request"], 4),
            "each_request_added_ms": round(p50["each_request"] - p50["without"], 4),
            "database": connection.vendor, "rows": UsageRow.objects.count(),
            "recorded": UsageRow.objects.aggregate(n=Sum("requests"))["n"]}


if __name__ == "__main__":
    print(json.dumps(_measure(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)))
