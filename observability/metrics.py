"""Prometheus metrics: the instruments, the functions services call, and /metrics.

Several uvicorn workers: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder that every
worker can write (prometheus-client's multiprocess mode); each worker then writes its
samples there and /metrics, whichever worker answers it, adds them all up. Gauges of a
process (queue depth, batch size, loaded models) use ``livesum``: the sum over the
processes alive, and a worker's files are dropped when it exits.

Engine gauges are read from this process's engine at scrape time and, once a model is
loaded, once a second by a sampler thread, so other workers' values stay current too.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from core.usage import Usage, subscribe

MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")

REQUESTS = Counter("gpt3dev_requests", "HTTP requests answered, by route, model and status.",
                   ["route", "model", "status"])
REQUEST_DURATION = Histogram(
    "gpt3dev_request_duration_seconds",
    "End-to-end latency: request received to last byte sent (a stream's [DONE]).",
    ["route", "model"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
TTFT = Histogram(
    "gpt3dev_time_to_first_token_seconds",
    "Time from request received to the first generated token.",
    ["model"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
INTER_TOKEN = Histogram(
    "gpt3dev_inter_token_latency_seconds",
    "Time between successive generated tokens of a request.",
    ["model"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PROMPT_TOKENS = Counter("gpt3dev_prompt_tokens", "Prompt tokens processed.", ["model"])
COMPLETION_TOKENS = Counter("gpt3dev_completion_tokens", "Completion tokens generated.", ["model"])
QUEUE_DEPTH = Gauge(
    "gpt3dev_queue_depth", "Sequences waiting for a batch slot.", ["model"], multiprocess_mode="livesum"
)
RUNNING = Gauge(
    "gpt3dev_running_batch_size", "Sequences in the running batch.", ["model"], multiprocess_mode="livesum"
)
# The engine's own counters are read from its stats, so they are gauges here (summed
# over live processes; a restarted process starts from zero).
KV_GAUGES = {
    key: Gauge(name, doc, ["model"], multiprocess_mode="livesum")
    for key, name, doc in (
        ("kv_tokens_used", "gpt3dev_kv_cache_used_tokens", "KV pool tokens held by running sequences."),
        ("kv_tokens_cached", "gpt3dev_kv_cache_cached_tokens",
         "KV pool tokens kept only for prefix reuse (evictable)."),
        ("kv_tokens_total", "gpt3dev_kv_cache_capacity_tokens", "KV pool capacity in tokens."),
        ("kv_bytes_touched", "gpt3dev_kv_cache_touched_bytes",
         "KV pool bytes ever written (on CPU the pool's pages are committed as first written, and stay)."),
        ("preemptions", "gpt3dev_preemptions", "Sequences preempted for lack of KV blocks since load."),
        ("prefix_cache_queries", "gpt3dev_prefix_cache_query_tokens", "Prompt tokens looked up in the prefix cache."),
        ("prefix_cache_hits", "gpt3dev_prefix_cache_hit_tokens", "Prompt tokens found in the prefix cache."),
    )
}
# Grammar compilation and masks (inference.constraints): counters since load, and the
# compile pool now. Mean compile time = rate(..._seconds) / rate(gpt3dev_grammar_compiles).
GRAMMAR_GAUGES = {
    key: Gauge(name, doc, ["model"], multiprocess_mode="livesum")
    for key, name, doc in (
        ("grammar_compiles", "gpt3dev_grammar_compiles", "Grammars compiled (cache misses), late ones included."),
        ("grammar_compile_seconds", "gpt3dev_grammar_compile_seconds", "Time spent compiling grammars."),
        ("grammar_compile_timeouts", "gpt3dev_grammar_compile_timeouts",
         "Grammars whose compile passed GRAMMAR_COMPILE_TIMEOUT (then refused for GRAMMAR_REFUSE_SECONDS)."),
        ("grammar_refused", "gpt3dev_grammar_refused", "Requests refused at once: their grammar had timed out."),
        ("grammar_over_limits", "gpt3dev_grammar_over_limits",
         "Grammars refused before compiling: over GRAMMAR_MAX_BYTES or GRAMMAR_MAX_DEPTH, or malformed."),
        ("grammar_compile_busy", "gpt3dev_grammar_compile_busy", "Requests turned away (429): no compile worker free."),
        ("grammar_compile_running", "gpt3dev_grammar_compile_running", "Grammar compiles running now."),
        ("grammar_compile_waiting", "gpt3dev_grammar_compile_queue", "Grammar compiles waiting for a worker."),
        ("grammar_mask_budget_exceeded", "gpt3dev_grammar_mask_budget_exceeded",
         "Requests ended because their grammar's mask passed GRAMMAR_MASK_BUDGET_MS or its parser limits."),
    )
}
KV_USAGE = Gauge(
    "gpt3dev_kv_cache_usage_ratio", "Fraction of the KV pool held by running sequences.", ["model"],
    multiprocess_mode="max",
)
LOADED = Gauge(
    "gpt3dev_model_loaded", "Server processes holding the model in memory.", ["model"], multiprocess_mode="livesum"
)
LOAD_SECONDS = Histogram(
    "gpt3dev_model_load_seconds",
    "Time to load a model into memory.",
    ["model"],
    buckets=(0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
IN_FLIGHT = Gauge("gpt3dev_requests_in_flight", "API requests being answered.", multiprocess_mode="livesum")
# Upstream servers of ``upstream`` registry rows (label ``upstream``: the base URL as
# configured in the registry, which never holds credentials).
UPSTREAM_HEALTHY = Gauge(
    "gpt3dev_upstream_healthy", "1 while this process routes to the upstream server, 0 while it is ejected.",
    ["model", "upstream"], multiprocess_mode="livemin",
)
UPSTREAM_IN_FLIGHT = Gauge(
    "gpt3dev_upstream_in_flight", "Requests in flight to the upstream server.", ["model", "upstream"],
    multiprocess_mode="livesum",
)
UPSTREAM_LATENCY = Histogram(
    "gpt3dev_upstream_latency_seconds",
    "Time from sending to an upstream server until its answer began (a stream's first event; "
    "a health check's answer).",
    ["model", "upstream"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
UPSTREAM_FAILURES = Counter(
    "gpt3dev_upstream_failures",
    "Failed calls to an upstream server, by reason (connect, timeout, status, malformed, read, too_large).",
    ["model", "upstream", "reason"],
)

_seen: set[str] = set()
_engine_stats: Callable[[], dict[str, dict[str, int]]] | None = None
_sampler_lock = threading.Lock()
_refresh_lock = threading.Lock()
_sampler_started = False


# ----------------------------------------------------------------- request-level hooks
def request_finished(*, route: str, model: str, status: int, seconds: float) -> None:
    REQUESTS.labels(route, model, str(status)).inc()
    REQUEST_DURATION.labels(route, model).observe(seconds)


def observe_many(histogram: Any, value: float, count: int) -> None:
    """``count`` observations of one ``value`` in constant time: a token count reported
    by an upstream (a million, say) must not become a million calls on the event loop.
    Adds to the sum and to the one bucket the value falls in, as ``observe`` would
    ``count`` times (prometheus_client has no weighted observe)."""
    if count <= 0:
        return
    try:
        bounds, buckets, total = histogram._upper_bounds, histogram._buckets, histogram._sum
    except AttributeError:  # another prometheus_client: one observation per chunk
        histogram.observe(value)
        return
    total.inc(value * count)
    for bound, bucket in zip(bounds, buckets):
        if value <= bound:
            bucket.inc(count)
            break


class GenerationTimer:
    """TTFT, inter-token latency and the generated tokens of one generation.

    ``tokens(n)`` for each batch of tokens as it arrives (the first call is the first
    token), ``done()`` once at the end. The counts go into ``usage`` (the services'
    account of what the request used); generated tokens are also counted as they come,
    so a long generation shows in the token rate while it runs. Prompt tokens are
    counted from the usage when the request ends (:func:`count_usage`).
    """

    def __init__(self, used: Usage) -> None:
        self.used = used
        self.last: float | None = None

    @property
    def model(self) -> str:
        return self.used.model or ""

    def tokens(self, count: int) -> None:
        now = time.monotonic()
        if self.last is None:
            self.used.first_token()
            if self.used.input_tokens is None:  # nobody said (an upstream without usage)
                self.used.input_tokens = 0
            TTFT.labels(self.model).observe(now - self.used.started)
        elif count > 0:
            gap = (now - self.last) / count
            observe_many(INTER_TOKEN.labels(self.model), gap, count)
        if count > 0:
            self.last = now
            self.used.output_tokens += count
            COMPLETION_TOKENS.labels(self.model).inc(count)
        elif self.last is None:
            self.last = now

    def first_token(self) -> None:
        """Non-streaming answers: the first token has arrived (tokens counted at done)."""
        if self.last is None:
            self.tokens(0)

    def done(self, completion_tokens: int | None = None) -> None:
        """The answer is complete; non-streaming answers give their token count here and
        their inter-token latency is the mean gap."""
        if self.last is None:
            self.first_token()
        if completion_tokens is not None and completion_tokens > self.used.output_tokens:
            extra = completion_tokens - self.used.output_tokens
            if extra > 1 and self.last is not None:
                gap = (time.monotonic() - self.last) / (extra - 1)
                observe_many(INTER_TOKEN.labels(self.model), gap, extra - 1)
            self.used.output_tokens = completion_tokens
            COMPLETION_TOKENS.labels(self.model).inc(extra)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        """The answer is complete and someone else counted its tokens (an upstream
        server's ``usage``): those counts replace ours."""
        if self.last is None:
            self.first_token()
        self.used.input_tokens = prompt_tokens
        self.done(completion_tokens)
        self.used.output_tokens = completion_tokens


def count_usage(used: Usage) -> None:
    """A request has ended: count the prompt tokens its usage says it read."""
    if used.model is not None and used.input_tokens:
        PROMPT_TOKENS.labels(used.model).inc(used.input_tokens)


subscribe(count_usage)


# ------------------------------------------------------------------ model-level hooks
def model_loaded(model: str, obj: Any, seconds: float | None) -> None:
    """A model is in memory in this process (``seconds``: it was loaded just now)."""
    if seconds is not None:
        LOAD_SECONDS.labels(model).observe(seconds)
    refresh_engine_gauges()
    _start_sampler()


def set_engine_stats_source(source: Callable[[], dict[str, dict[str, int]]]) -> None:
    """Where the engine gauges come from: the engine registers its ``model_stats`` when
    it is created (so this module never imports the engine)."""
    global _engine_stats
    _engine_stats = source


def refresh_engine_gauges() -> None:
    """Set this process's engine gauges from the engine (cheap: no locks held long)."""
    source = _engine_stats
    all_stats = source() if source is not None else {}
    loaded = set(all_stats)
    with _refresh_lock:  # the sampler thread and a scrape may run this at once
        for model in loaded | _seen:
            stats = all_stats.get(model, {})
            LOADED.labels(model).set(1 if model in loaded else 0)
            QUEUE_DEPTH.labels(model).set(stats.get("waiting", 0))
            RUNNING.labels(model).set(stats.get("running", 0))
            for key, gauge in KV_GAUGES.items():
                gauge.labels(model).set(stats.get(key, 0))
            for key, gauge in GRAMMAR_GAUGES.items():
                gauge.labels(model).set(stats.get(key, 0))
            KV_USAGE.labels(model).set(stats.get("kv_usage", 0))
        _seen.update(loaded)


def _start_sampler() -> None:
    global _sampler_started
    with _sampler_lock:
        if _sampler_started:
            return
        _sampler_started = True
    threading.Thread(target=_sample_forever, name="gpt3dev-metrics", daemon=True).start()


def _sample_forever() -> None:
    while True:
        time.sleep(1.0)
        try:
            refresh_engine_gauges()
        except Exception:  # a metrics hiccup must never take anything else down
            pass


if MULTIPROC_DIR:  # a worker's live gauges go with it
    from prometheus_client import multiprocess

    atexit.register(lambda: multiprocess.mark_process_dead(os.getpid()))


# ------------------------------------------------------------------------ /metrics
def metrics_view(request: HttpRequest) -> HttpResponse:
    from django.conf import settings

    if not settings.GPT3DEV["METRICS_ENABLED"]:
        return HttpResponse("metrics are disabled (METRICS_ENABLED=0)\n", status=404, content_type="text/plain")
    refresh_engine_gauges()
    if MULTIPROC_DIR:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
