"""The scheduling policy: how one step's token budget is shared out and when a request
that does not fit may be overtaken. Pure functions over plain numbers (no torch, no
threads, no scheduler state), so each rule is testable alone and the web settings can
read the defaults without importing torch; :mod:`inference.scheduler` applies them.

The rules (vLLM v1 style, see the scheduler's docstring for the whole step):

* the budget of a step is ``max_step_tokens`` while some row is decoding (a long
  prompt's chunks must not stall the streams), ``max_prefill_tokens`` while every row
  is still reading its prompt (nobody is waiting for a token);
* a row reading its prompt takes the rest of it within the budget; while streams
  decode, a chunk deep into a long prompt is made smaller, so that every step costs
  about what a full chunk costs at the start (:func:`chunk_tokens`);
* a request that does not fit is skipped by narrower ones behind it until it has been
  skipped for ``max_skip_s`` (:func:`may_be_overtaken`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SchedulerLimits:
    """Admission and step sizes of one scheduler. These defaults are the only ones:
    the engine's config and the web settings read them from here."""

    max_batch_size: int = 16  # rows decoding together
    max_queue: int = 256  # sequences waiting; beyond -> EngineOverloaded
    max_step_tokens: int = 64  # tokens in one forward while some row is decoding
    max_prefill_tokens: int = 512  # tokens in one forward while every row is still prefilling
    max_skip_s: float = 10.0  # how long a request that does not fit may be overtaken

    def normalised(self) -> SchedulerLimits:
        """At least one row; a step fits a token per row; a prefill step is never
        smaller than a decode step."""
        batch = max(1, self.max_batch_size)
        step = max(self.max_step_tokens, batch)
        return SchedulerLimits(batch, max(0, self.max_queue), step, max(self.max_prefill_tokens, step),
                               self.max_skip_s)


def attention_span(config: Any) -> int:
    """The context length at which a token's attention costs as much as its projections
    (multiply-adds per token: the decoder linears' weights, against 2 x heads x head_dim
    per context token); 0 where the config does not say (chunks are then not shrunk)."""
    try:
        hidden, heads = int(config.hidden_size), int(config.num_attention_heads)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        dim = int(getattr(config, "head_dim", None) or hidden // heads)
        per_layer = hidden * dim * (2 * heads + 2 * kv_heads) + 3 * hidden * int(config.intermediate_size)
    except (AttributeError, TypeError, ValueError):
        return 0
    return max(1, per_layer // (2 * heads * dim))


def step_budget(limits: SchedulerLimits, decoding: bool) -> int:
    """Tokens of this step's forward: small while streams decode, big while none does."""
    return limits.max_step_tokens if decoding else limits.max_prefill_tokens


def chunk_tokens(remaining: int, budget: int, computed: int, *, decoding: bool, max_step_tokens: int,
                 span: int) -> int:
    """Tokens a row feeds this step: the ``remaining`` tokens of its prompt within
    ``budget``. While streams decode, a chunk after ``computed`` tokens of context is cut
    to ``max_step_tokens / (1 + computed / span)``: each chunk token attends to all the
    tokens before it, which at ``span`` tokens of context costs as much again as its
    projections (``span`` 0: never cut)."""
    take = min(remaining, budget)
    if take > 1 and decoding and span:
        take = min(take, max(1, int(max_step_tokens / (1 + computed / span))))
    return take


def may_be_overtaken(skipped_since: float, now: float, max_skip_s: float) -> bool:
    """Whether narrower requests may still go ahead of one first skipped at ``skipped_since``."""
    return now - skipped_since < max_skip_s
