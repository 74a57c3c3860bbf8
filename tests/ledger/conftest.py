"""Fixtures for the ledger tests: a clock the tests set, and usage records as the
access log's middleware hands them to the ledger."""

from __future__ import annotations

import pytest

from core.usage import Usage
from ledger import recorder

HOUR = 3600
START = 1_796_000_400  # 2026-11-30 01:00 UTC (an hour's start)


@pytest.fixture
def clock(monkeypatch):
    """The ledger's clock, frozen at START; set ``clock.now`` to move it."""

    class Clock:
        now = float(START)

    frozen = Clock()
    monkeypatch.setattr(recorder, "now", lambda: frozen.now)
    monkeypatch.setattr(recorder, "_purged_hour", None)
    return frozen


def usage(*, endpoint="chat-completions", path="/v1/chat/completions", model="SmolLM2-135M-Instruct",
          key_id="db:1", key_name="alice", status=200, input_tokens=10, cached_tokens=0, output_tokens=5) -> Usage:
    return Usage(endpoint=endpoint, path=path, model=model, key_id=key_id, key_name=key_name, status=status,
                 input_tokens=input_tokens, cached_tokens=cached_tokens, output_tokens=output_tokens)
