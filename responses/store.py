"""Reading and writing stored responses: scoped to their API key, bounded by retention
(``RESPONSES_RETENTION_DAYS``) and a row cap (``RESPONSES_MAX_STORED``), and never left
``queued``/``in_progress`` by a process that is gone.

A background response records the process generating it (``host:pid:boot``). When the
server starts, and whenever such a row is read, one whose process on this host no longer
runs is marked ``failed``; a row of another host is left to that host.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from responses.models import StoredResponse

logger = logging.getLogger("gpt3dev.responses")

HOST = socket.gethostname()
BOOT = uuid.uuid4().hex[:12]
WORKER = f"{HOST}:{os.getpid()}:{BOOT}"
INTERRUPTED = ("The server stopped before this background response finished; it was not completed. "
               "Create it again.")
PURGE_EVERY_SECONDS = 60

_last_purge = 0.0
_purge_lock = threading.Lock()


def owner_of(request) -> tuple[str, str]:
    """``(owner id, key name)`` of a request: its API key, or nobody on an open server."""
    principal = getattr(request, "api_key", None)
    if principal is None:
        return "", ""
    return principal.bucket, principal.name


# ------------------------------------------------------------------------ liveness
def _process_gone(worker: str, response_id: str) -> bool:
    """Whether the process that owned a background row is known to be gone."""
    if not worker:
        return True
    host, _, rest = worker.partition(":")
    pid_text, _, boot = rest.partition(":")
    if host != HOST:
        return False  # another machine's row: that machine's business
    if boot == BOOT:
        from responses import background

        return not background.is_running(response_id)
    try:
        pid = int(pid_text)
    except ValueError:
        return True
    if pid == os.getpid():
        return True  # the pid came back, the boot token did not: another process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def failed_body(body: dict[str, Any], message: str) -> dict[str, Any]:
    return body | {"status": "failed", "error": {"code": "server_error", "message": message}}


def mark_interrupted(row: StoredResponse) -> bool:
    """Mark a stale background row failed (True when it was)."""
    if row.status not in StoredResponse.UNFINISHED or not _process_gone(row.worker, row.id):
        return False
    body = failed_body(row.body, INTERRUPTED)
    done = StoredResponse.objects.filter(pk=row.pk, status__in=StoredResponse.UNFINISHED).update(
        status=StoredResponse.Status.FAILED, body=body)
    if done:
        row.status, row.body = StoredResponse.Status.FAILED, body
    return bool(done)


def fail_interrupted() -> int:
    """At start-up: every unfinished row left by a process of this host that is gone."""
    count = 0
    for row in StoredResponse.objects.filter(status__in=StoredResponse.UNFINISHED):
        count += mark_interrupted(row)
    if count:
        logger.warning("Marked %d unfinished background response(s) failed: their process is gone.", count)
    return count


# ---------------------------------------------------------------------- reading
def get_owned(owner: str, response_id: str) -> StoredResponse | None:
    row = StoredResponse.objects.filter(pk=response_id, owner=owner).first()
    if row is not None:
        mark_interrupted(row)
    return row


# ---------------------------------------------------------------------- writing
def save(row: StoredResponse) -> None:
    row.save()
    maybe_purge()


def finish(response_id: str, body: dict[str, Any], *, background: bool) -> bool:
    """Write a finished response. A background row is written only while it is
    unfinished (a cancel that came first wins); True when written."""
    rows = StoredResponse.objects.filter(pk=response_id)
    if background:
        rows = rows.filter(status__in=StoredResponse.UNFINISHED)
    return bool(rows.update(status=body["status"], body=body, updated_at=timezone.now()))


# ---------------------------------------------------------------------- retention
def purge(*, now=None, days: int | None = None, keep: int | None = None) -> tuple[int, int]:
    """Delete rows older than the retention and the oldest rows over the cap:
    ``(expired, over cap)`` rows deleted. Unfinished rows are kept."""
    conf = settings.GPT3DEV
    now = now or timezone.now()
    days = conf["RESPONSES_RETENTION_DAYS"] if days is None else days
    keep = conf["RESPONSES_MAX_STORED"] if keep is None else keep
    finished = StoredResponse.objects.exclude(status__in=StoredResponse.UNFINISHED)
    expired, _ = finished.filter(created_at__lt=now - timedelta(days=days)).delete()
    over = 0
    with transaction.atomic():
        extra = StoredResponse.objects.count() - keep
        if extra > 0:
            oldest = list(finished.order_by("created_at").values_list("pk", flat=True)[:extra])
            over, _ = StoredResponse.objects.filter(pk__in=oldest).delete()
    return expired, over


def maybe_purge() -> None:
    """Purge at most once a minute per process, after a write."""
    global _last_purge
    with _purge_lock:
        if time.monotonic() - _last_purge < PURGE_EVERY_SECONDS:
            return
        _last_purge = time.monotonic()
    try:
        purge()
    except Exception:  # retention must never fail the request that triggered it
        logger.exception("Purging stored responses failed")
