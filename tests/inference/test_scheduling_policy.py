"""The scheduling policy alone (inference.scheduling_policy): budgets, chunk sizes,
the skip-ahead rule and the one set of defaults. Plain numbers, no model."""

from __future__ import annotations

import sys
import types

from inference.scheduling_policy import SchedulerLimits, attention_span, chunk_tokens, may_be_overtaken, step_budget


def test_decoding_steps_are_small_and_prefill_steps_big():
    limits = SchedulerLimits(max_step_tokens=64, max_prefill_tokens=512)
    assert step_budget(limits, decoding=True) == 64
    assert step_budget(limits, decoding=False) == 512


def test_limits_are_normalised_so_a_step_holds_a_token_per_row():
    got = SchedulerLimits(max_batch_size=0, max_queue=-3, max_step_tokens=4, max_prefill_tokens=2).normalised()
    assert got.max_batch_size == 1 and got.max_queue == 0
    got = SchedulerLimits(max_batch_size=32, max_step_tokens=8, max_prefill_tokens=16).normalised()
    assert got.max_step_tokens == 32 and got.max_prefill_tokens == 32


def test_a_prompt_takes_what_is_left_of_the_budget_and_shrinks_deep_into_its_context_while_streams_decode():
    # Alone, the rest of the prompt within the budget, however deep.
    assert chunk_tokens(1000, 512, 3000, decoding=False, max_step_tokens=64, span=300) == 512
    assert chunk_tokens(10, 512, 3000, decoding=False, max_step_tokens=64, span=300) == 10
    # Among streams: a full chunk at the start, a smaller one as context grows.
    assert chunk_tokens(1000, 64, 0, decoding=True, max_step_tokens=64, span=300) == 64
    assert chunk_tokens(1000, 64, 300, decoding=True, max_step_tokens=64, span=300) == 32
    assert chunk_tokens(1000, 64, 30000, decoding=True, max_step_tokens=64, span=300) == 1
    # No span known: never shrunk; a decoding row takes its one token.
    assert chunk_tokens(1000, 64, 30000, decoding=True, max_step_tokens=64, span=0) == 64
    assert chunk_tokens(1, 64, 30000, decoding=True, max_step_tokens=64, span=300) == 1


def test_a_request_skipped_too_long_is_no_longer_overtaken():
    assert may_be_overtaken(100.0, 105.0, 10.0)
    assert not may_be_overtaken(100.0, 110.0, 10.0)
    assert not may_be_overtaken(100.0, 100.0, 0.0)


def test_attention_span_from_the_config_or_zero():
    config = types.SimpleNamespace(hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
                                   intermediate_size=1536)
    # (576*64*(2*9 + 2*3) + 3*576*1536) / (2*9*64): SmolLM2-135M's shape
    assert attention_span(config) == 3072
    assert attention_span(types.SimpleNamespace()) == 0


def test_the_defaults_are_written_once_and_read_by_the_engine_and_the_settings():
    from inference.engine import EngineConfig

    limits = SchedulerLimits()
    config = EngineConfig(cache_dir=".")
    assert (config.max_batch_size, config.max_queue, config.max_step_tokens, config.max_prefill_tokens,
            config.max_skip_s) == (limits.max_batch_size, limits.max_queue, limits.max_step_tokens,
                                   limits.max_prefill_tokens, limits.max_skip_s)
    import ast
    from pathlib import Path

    # The web settings name SchedulerLimits' fields instead of repeating numbers.
    settings = ast.parse((Path(__file__).parents[2] / "gpt3dev" / "settings.py").read_text())
    named = {node.attr for node in ast.walk(settings)
             if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "SchedulerLimits"}
    assert named == {"max_batch_size", "max_queue", "max_step_tokens", "max_prefill_tokens", "max_skip_s"}


def test_the_policy_module_does_not_import_torch():
    import subprocess

    code = "import sys, inference.scheduling_policy; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=str(__import__("pathlib").Path(__file__).parents[2])
                          ).returncode == 0
