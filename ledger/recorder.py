"""Writing the ledger: one upsert per row, batched per process, and the retention purge.

:func:`record` is a :func:`core.usage.subscribe` consumer (registered in
:class:`ledger.apps.LedgerConfig`). It adds the request to this process's pending sums
of its (hour, key, model, endpoint), in memory; a thread of the process writes them
every ``USAGE_FLUSH_SECONDS`` (and at exit), one upsert per row in one transaction, so a
request never waits for a database commit (on a busy disk a commit's fsync takes
milliseconds) and a burst of requests on one row is one write. With
``USAGE_FLUSH_SECONDS=0`` each request is written when it ends, in its own thread.

Each upsert is a single ``INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n`` on
SQLite and PostgreSQL, an atomic statement on both, so any number of workers can add to
one row at once without losing a count (other databases: an UPDATE, then an INSERT that
falls back to the UPDATE when another process inserted first). A process killed without
warning loses at most its last ``USAGE_FLUSH_SECONDS`` of usage; the quotas do not
depend on the ledger.

Tokens are counted as the rate limiter charges them (:attr:`core.usage.Usage.charged_tokens`):
an answered request its usage, a request whose client left (499) what it read and wrote
before leaving, a refused or failed one nothing (it is counted as an error).

"Now" is read through :func:`now`, which tests replace.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F

from core.middleware import is_api_path
from core.usage import CLIENT_CLOSED_REQUEST, Usage
from ledger.models import ANONYMOUS, UsageRow

HOUR = 3600
COUNTERS = ("requests", "input_tokens", "cached_tokens", "output_tokens", "errors_4xx", "errors_5xx", "cancelled")
KEYS = ("hour", "key_id", "model", "endpoint")

logger = logging.getLogger("gpt3dev.ledger")

_purged_hour: int | None = None  # the hour this process last purged old rows in
_lock = threading.Lock()
_pending: dict[tuple[int, str, str, str], list[int]] = {}  # (hour, key, model, endpoint) -> COUNTERS
_names: dict[tuple[int, str, str, str], str] = {}  # the key's name, as last seen
_flusher_pid: int | None = None  # the process whose flushing thread runs


def now() -> float:
    """Unix time; the one clock of the ledger."""
    return time.time()


def counts(used: Usage) -> dict[str, int]:
    """What one request adds to its row."""
    status = used.status
    charged = status < 400 or status == CLIENT_CLOSED_REQUEST
    return {
        "requests": 1,
        "input_tokens": (used.input_tokens or 0) if charged else 0,
        "cached_tokens": used.cached_tokens if charged and used.input_tokens is not None else 0,
        "output_tokens": used.output_tokens if charged else 0,
        "errors_4xx": int(400 <= status < 500 and status != CLIENT_CLOSED_REQUEST),
        "errors_5xx": int(status >= 500),
        "cancelled": int(status == CLIENT_CLOSED_REQUEST),
    }


def record(used: Usage) -> None:
    """Add one finished request to the ledger (API routes only: not the admin, the
    playground page, health probes or /metrics)."""
    if not is_api_path(used.path):
        return
    hour = int(now() // HOUR) * HOUR
    row = (hour, used.key_id or ANONYMOUS, (used.model or "")[:200], used.endpoint[:64])
    values = counts(used)
    interval = settings.GPT3DEV["USAGE_FLUSH_SECONDS"]
    if not interval:
        add(row[0], row[1], used.key_name or "", row[2], row[3], values)
        _purge_once_an_hour(hour)
        return
    with _lock:
        sums = _pending.setdefault(row, [0] * len(COUNTERS))
        for i, name in enumerate(COUNTERS):
            sums[i] += values[name]
        _names[row] = used.key_name or ""
    _start_flusher(interval)


def flush() -> None:
    """Write this process's pending sums now (the Usage API and the admin call it before
    reading, so that what this process served is in what they read)."""
    with _lock:
        pending, names = dict(_pending), dict(_names)
        _pending.clear()
        _names.clear()
    if not pending:
        return
    try:
        with transaction.atomic():
            # In one order in every process: two transactions never wait on each other's rows.
            for (hour, key_id, model, endpoint), sums in sorted(pending.items()):
                add(hour, key_id, names[(hour, key_id, model, endpoint)], model, endpoint, dict(zip(COUNTERS, sums)))
    except Exception:
        with _lock:  # kept for the next try
            for row, sums in pending.items():
                mine = _pending.setdefault(row, [0] * len(COUNTERS))
                for i, value in enumerate(sums):
                    mine[i] += value
                _names.setdefault(row, names[row])
        raise
    _purge_once_an_hour(max(hour for hour, *_ in pending))


def flush_before_reading() -> None:
    """:func:`flush`, for a reader: a failure is logged (the sums stay pending) and the
    reader reads what is written."""
    try:
        flush()
    except Exception:
        logger.exception("writing the usage ledger failed; its sums are kept for the next try")


def _start_flusher(interval: float) -> None:
    global _flusher_pid
    if _flusher_pid == os.getpid():
        return
    with _lock:
        if _flusher_pid == os.getpid():
            return
        _flusher_pid = os.getpid()
    threading.Thread(target=_flush_forever, args=(interval,), name="gpt3dev-ledger", daemon=True).start()


def _flush_forever(interval: float) -> None:
    while True:
        time.sleep(interval)
        try:
            flush()
        except Exception:
            logger.exception("writing the usage ledger failed; its sums are kept for the next try")
        finally:
            connection.close()  # this thread's own connection: a fresh one each time


@atexit.register
def _flush_at_exit() -> None:
    if _pending:
        try:
            flush()
        except Exception:
            logger.exception("writing the usage ledger at exit failed")


def add(hour: int, key_id: str, key_name: str, model: str, endpoint: str, values: dict[str, int]) -> None:
    """Add ``values`` to the row of (hour, key, model, endpoint), made if need be."""
    if connection.vendor in ("sqlite", "postgresql"):
        _upsert(hour, key_id, key_name, model, endpoint, values)
        return
    keys = {"hour": hour, "key_id": key_id, "model": model, "endpoint": endpoint}
    increments = {name: F(name) + value for name, value in values.items()}
    if UsageRow.objects.filter(**keys).update(key_name=key_name, **increments):
        return
    try:
        with transaction.atomic():
            UsageRow.objects.create(key_name=key_name, **keys, **values)
    except IntegrityError:  # another process made the row first
        UsageRow.objects.filter(**keys).update(key_name=key_name, **increments)


def _upsert(hour: int, key_id: str, key_name: str, model: str, endpoint: str, values: dict[str, int]) -> None:
    quote = connection.ops.quote_name
    table = quote(UsageRow._meta.db_table)
    columns = [*KEYS, "key_name", *COUNTERS]
    sums = ", ".join(f"{quote(c)} = {table}.{quote(c)} + excluded.{quote(c)}" for c in COUNTERS)
    sql = (
        f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))}) "
        f"ON CONFLICT ({', '.join(quote(c) for c in KEYS)}) "
        f"DO UPDATE SET {quote('key_name')} = excluded.{quote('key_name')}, {sums}"
    )
    params = [hour, key_id, model, endpoint, key_name, *(values[c] for c in COUNTERS)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def purge(*, before: int | None = None) -> int:
    """Delete the rows older than USAGE_RETENTION_DAYS (or than unix time ``before``);
    returns how many were deleted."""
    if before is None:
        before = int(now()) - settings.GPT3DEV["USAGE_RETENTION_DAYS"] * 86400
    deleted, _ = UsageRow.objects.filter(hour__lt=before).delete()
    return deleted


def _purge_once_an_hour(hour: int) -> None:
    global _purged_hour
    if _purged_hour != hour:
        _purged_hour = hour
        purge()
