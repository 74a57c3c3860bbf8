"""The one-time conversions say what they are doing: a line as each phase starts, one
every few seconds while it runs with no bar on screen, and one with its duration."""

from __future__ import annotations

import logging
import time

import pytest

from inference.progress import bar, phase

log = logging.getLogger("tests.progress")


def test_a_phase_announces_itself_repeats_while_silent_and_reports_its_duration(caplog):
    caplog.set_level(logging.INFO, logger="tests.progress")
    with phase(log, "reading things", heartbeat_s=0.05):
        time.sleep(0.3)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "reading things ..."
    assert lines[-1].startswith("reading things: done in ")
    assert sum("reading things: still running" in line for line in lines[1:-1]) >= 2


def test_no_heartbeat_while_a_bar_shows_progress(caplog):
    from huggingface_hub.utils import are_progress_bars_disabled

    if are_progress_bars_disabled():
        pytest.skip("HF_HUB_DISABLE_PROGRESS_BARS is set: no bar shows, so the heartbeat must")
    caplog.set_level(logging.INFO, logger="tests.progress")
    with phase(log, "quantizing", heartbeat_s=0.05), bar(10, "layers", "layer") as progress:
        for _ in range(10):
            time.sleep(0.03)
            progress.update(1)
    assert not [r for r in caplog.records if "still running" in r.getMessage()]


def test_a_failed_phase_does_not_claim_it_is_done(caplog):
    caplog.set_level(logging.INFO, logger="tests.progress")
    with pytest.raises(RuntimeError), phase(log, "writing", heartbeat_s=0.05):
        raise RuntimeError("disk full")
    assert [r.getMessage() for r in caplog.records] == ["writing ..."]
