"""Logits processing and token sampling for one decode step of a batch.

Every row of a batch carries its own :class:`SamplingParams` and its own
``torch.Generator``; this module turns a ``[rows, vocab]`` logits tensor into one
token per row, and (when asked) log-probabilities. The rows' parameters are stacked
into per-row columns so that each stage below is a fixed number of tensor operations
over the rows it concerns, not a loop over rows; the only per-row operation left is
the one scalar draw of each sampled row from its own generator. Tokens and logprobs
come back to Python in one transfer per step.

Order of operations (the same as vLLM, so logprobs match what OpenAI clients expect):

1. repetition penalty (HF multiplicative, over prompt + generated tokens);
2. presence / frequency penalties (OpenAI additive rule, generated tokens only):
   ``logit[j] -= count[j] * frequency_penalty + (count[j] > 0) * presence_penalty``;
3. logit_bias added;
4. EOS ids and ``stop_token_ids`` masked while fewer than ``min_tokens`` tokens have been generated;
5. the grammar mask of constrained rows (:func:`inference.constraints.apply_masks`):
   tokens the row's grammar forbids get -inf; unconstrained rows are untouched;
6. **logprobs are taken here**: log-softmax of the processed logits, *before*
   temperature / top-k / top-p / min-p (the vLLM/OpenAI convention: they describe the
   model's distribution, not the truncated sampling distribution);
7. temperature 0 -> argmax (no sort); otherwise divide by temperature, apply top-k,
   top-p and min-p, and draw with the row's generator by inverse-CDF - in id order, or
   over a *stable* sort for top-p rows - so a seeded row draws the same token whatever
   else shares the batch.

Penalties use per-row counts kept up to date token by token (:meth:`RowState.push`),
never rebuilt from the whole history: a step costs O(rows x vocab).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .constraints import RowMatcher, apply_masks
from .types import SamplingParams

# Temperatures below this are treated as greedy (dividing by ~0 overflows).
_GREEDY_EPS = 1e-5


def sequence_generator(seed: int | None, index: int) -> torch.Generator:
    """A CPU generator for sequence ``index`` of a request: seeded requests give each of
    their ``n`` sequences a distinct but reproducible stream; unseeded ones get OS
    entropy. The global torch seed is never touched."""
    gen = torch.Generator(device="cpu")
    if seed is None:
        gen.manual_seed(secrets.randbits(63))
    else:
        # Mix the index in so sequence i of seed s differs from sequence 0 of seed s+i.
        gen.manual_seed((int(seed) * 1_000_003 + index * 7_919 + 0x5EED) % (1 << 63))
    return gen


@dataclass
class RowState:
    """What sampling needs to know about one sequence (owned by the scheduler).

    Penalty state is incremental: the per-token counts (presence/frequency) and the
    seen-token mask (repetition) are built from the history the first time they are
    needed and then updated by :meth:`push`, one token at a time."""

    params: SamplingParams
    generator: torch.Generator
    prompt_ids: list[int]
    eos_ids: tuple[int, ...]
    generated: list[int] = field(default_factory=list)
    constraint: RowMatcher | None = None  # the row's grammar matcher, if constrained
    counts: torch.Tensor | None = None  # [vocab] float32: times each id was generated
    seen: torch.Tensor | None = None  # [vocab] bool: ids in the prompt or generated

    def push(self, token: int) -> None:
        """Record a sampled token."""
        self.generated.append(token)
        if self.counts is not None and token < self.counts.shape[0]:
            self.counts[token] += 1
        if self.seen is not None and token < self.seen.shape[0]:
            self.seen[token] = True

    def token_counts(self, vocab: int, device: torch.device) -> torch.Tensor:
        if self.counts is None:
            counts = torch.zeros(vocab, dtype=torch.float32, device=device)
            if self.generated:
                ids = torch.tensor(self.generated, dtype=torch.long, device=device)
                counts += torch.bincount(ids, minlength=vocab)[:vocab].to(torch.float32)
            self.counts = counts
        return self.counts

    def seen_mask(self, vocab: int, device: torch.device) -> torch.Tensor:
        if self.seen is None:
            seen = torch.zeros(vocab, dtype=torch.bool, device=device)
            ids = [t for t in (*self.prompt_ids, *self.generated) if 0 <= t < vocab]
            if ids:
                seen[torch.tensor(ids, dtype=torch.long, device=device)] = True
            self.seen = seen
        return self.seen

    @property
    def ending_ids(self) -> tuple[int, ...]:
        """Ids that end this sequence once ``min_tokens`` are out: EOS (unless ignored)
        and the request's ``stop_token_ids``."""
        p = self.params
        return (() if p.ignore_eos else self.eos_ids) + p.stop_token_ids

    @property
    def greedy(self) -> bool:
        return self.params.temperature < _GREEDY_EPS


@dataclass
class StepResult:
    """Sampled token per row, plus logprob data for the rows that asked."""

    tokens: list[int]
    # per row: None, or (chosen logprob, [(token_id, logprob), ...] top alternatives)
    logprobs: list[tuple[float, list[tuple[int, float]]] | None]


def _index(rows: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long, device=device)


def _column(values: list[float], device: torch.device) -> torch.Tensor:
    """Per-row parameters as a ``[rows, 1]`` float32 column, broadcast over the vocabulary."""
    return torch.tensor(values, dtype=torch.float32, device=device)[:, None]


def process_logits(logits: torch.Tensor, rows: list[RowState], vocab_size: int) -> torch.Tensor:
    """Steps 1-4 above on a float32 copy; returns it. Each step is a fixed number of
    tensor operations over the rows it concerns (their parameters stacked as columns),
    whatever the batch size."""
    logits = logits.float().clone()
    width = logits.shape[-1]
    device = logits.device
    if width > vocab_size:
        # Padded embedding matrices: never sample ids the tokenizer cannot decode.
        logits[:, vocab_size:] = float("-inf")
    rep = [r for r, row in enumerate(rows) if row.params.repetition_penalty != 1.0]
    if rep:
        idx = _index(rep, device)
        x = logits.index_select(0, idx)
        seen = torch.stack([rows[r].seen_mask(width, device) for r in rep])
        penalty = _column([rows[r].params.repetition_penalty for r in rep], device)
        logits.index_copy_(0, idx, torch.where(seen, torch.where(x > 0, x / penalty, x * penalty), x))
    counted = [r for r, row in enumerate(rows)
               if (row.params.presence_penalty or row.params.frequency_penalty) and row.generated]
    if counted:
        idx = _index(counted, device)
        counts = torch.stack([rows[r].token_counts(width, device) for r in counted])
        frequency = _column([rows[r].params.frequency_penalty for r in counted], device)
        presence = _column([rows[r].params.presence_penalty for r in counted], device)
        x = logits.index_select(0, idx)
        logits.index_copy_(0, idx, x - (counts * frequency + (counts > 0).to(x.dtype) * presence))
    bias = [(r, t, b) for r, row in enumerate(rows) for t, b in row.params.logit_bias]
    if bias:
        rs, ts, bs = zip(*bias)
        logits.index_put_((_index(list(rs), device), _index(list(ts), device)),
                          torch.tensor(bs, dtype=torch.float32, device=device), accumulate=True)
    banned = [(r, t) for r, row in enumerate(rows) if row.params.min_tokens > len(row.generated)
              for t in row.ending_ids]
    if banned:
        rs, ts = zip(*banned)
        logits.index_put_((_index(list(rs), device), _index(list(ts), device)),
                          torch.tensor(float("-inf"), device=device))
    return logits


def _sample_rows(logits: torch.Tensor, rows: list[RowState]) -> torch.Tensor:
    """Non-greedy rows: temperature, top-k, top-p, min-p, then a seeded inverse-CDF draw;
    the tokens as a tensor (no host sync).

    Only rows with top_p sort their distribution (a stable descending sort, so equal
    probabilities keep id order); the others draw over the vocabulary in id order,
    top-k and min-p being thresholds, so a plain sampled row costs O(vocab). Each of
    the two groups is filtered in one pass, its rows' parameters stacked as columns."""
    device = logits.device
    width = logits.shape[-1]
    temps = _column([row.params.temperature for row in rows], device)
    probs = torch.softmax(logits / temps, dim=-1)
    nucleus = [r for r, row in enumerate(rows) if row.params.top_p < 1.0]
    plain = [r for r, row in enumerate(rows) if row.params.top_p >= 1.0]
    if not nucleus:
        return _draw(_plain_weights(probs, rows), rows)
    tokens = torch.empty(len(rows), dtype=torch.long, device=device)
    if plain:
        idx = _index(plain, device)
        tokens.index_copy_(0, idx, _draw(_plain_weights(probs.index_select(0, idx), [rows[r] for r in plain]),
                                          [rows[r] for r in plain]))
    group = [rows[r] for r in nucleus]
    p = probs if not plain else probs.index_select(0, _index(nucleus, device))
    sorted_p, sorted_ids = torch.sort(p, dim=-1, descending=True, stable=True)
    top_k = [row.params.top_k if row.params.top_k and row.params.top_k > 0 else width for row in group]
    keep = torch.arange(width, device=device)[None, :] < _index(top_k, device)[:, None]
    cum = torch.cumsum(sorted_p, dim=-1)
    # Keep the smallest prefix whose mass reaches top_p (the token crossing it stays).
    keep &= (cum - sorted_p) < _column([row.params.top_p for row in group], device)
    if any(row.params.min_p > 0.0 for row in group):
        keep &= sorted_p >= _column([row.params.min_p for row in group], device) * sorted_p[:, :1]
    keep[:, 0] = True  # never an empty distribution
    pos = _draw(torch.where(keep, sorted_p, torch.zeros_like(sorted_p)), group)
    picked = sorted_ids.gather(1, pos[:, None]).squeeze(1)
    if not plain:
        return picked
    return tokens.index_copy_(0, _index(nucleus, device), picked)


def _plain_weights(p: torch.Tensor, rows: list[RowState]) -> torch.Tensor:
    """Top-k and min-p as thresholds on probabilities in id order."""
    width = p.shape[-1]
    keep = None
    top_k = [row.params.top_k if row.params.top_k and 0 < row.params.top_k < width else 0 for row in rows]
    if any(top_k):
        # The k-th largest probability of each row (ks differ: take the largest k once).
        ks = _index(top_k, p.device)[:, None]
        kth = p.topk(max(top_k), dim=-1).values.gather(1, (ks - 1).clamp_(min=0))
        keep = p >= torch.where(ks > 0, kth, torch.zeros_like(kth))
    if any(row.params.min_p > 0.0 for row in rows):
        at_least = _column([row.params.min_p for row in rows], p.device) * p.amax(dim=-1, keepdim=True)
        keep = p >= at_least if keep is None else keep & (p >= at_least)
    return p if keep is None else torch.where(keep, p, torch.zeros_like(p))


def _draw(weights: torch.Tensor, rows: list[RowState]) -> torch.Tensor:
    """One index per row, drawn in proportion to ``weights`` with each row's generator
    (one scalar draw per row: the only per-row operation, since each seeded row has a
    stream of its own)."""
    cdf = torch.cumsum(weights.double(), dim=-1)
    u = torch.stack([torch.rand((), generator=row.generator, dtype=torch.float64) for row in rows]).to(cdf.device)
    pos = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(1)
    pos = pos.clamp_(max=cdf.shape[-1] - 1)
    # u*total can equal a cdf entry exactly and land on a zero-weight id: step back to
    # the last id with weight (the cdf is flat over zero-weight ids). No host sync.
    positive = weights > 0
    last = (positive * torch.arange(weights.shape[-1], device=weights.device)).amax(dim=-1)
    return torch.where(positive.gather(1, pos[:, None]).squeeze(1), pos, last)


def sample_step(logits: torch.Tensor, rows: list[RowState], vocab_size: int) -> StepResult:
    """One token per row from ``logits`` ``[len(rows), vocab]``; see the module docstring.
    Tokens and logprobs stay tensors until one transfer to Python at the end."""
    processed = process_logits(logits, rows, vocab_size)
    apply_masks(processed, [row.constraint for row in rows])
    device = processed.device
    sampled = [r for r, row in enumerate(rows) if not row.greedy]
    if not sampled:
        tokens = processed.argmax(dim=-1)
    elif len(sampled) == len(rows):
        tokens = _sample_rows(processed, rows)
    else:
        idx = _index(sampled, device)
        tokens = processed.argmax(dim=-1).index_copy_(
            0, idx, _sample_rows(processed.index_select(0, idx), [rows[r] for r in sampled]))
    want = [r for r, row in enumerate(rows) if row.params.logprobs is not None]
    if not want:
        return StepResult(tokens=tokens.tolist(), logprobs=[None] * len(rows))
    every = len(want) == len(rows)
    idx = None if every else _index(want, device)
    lp = torch.log_softmax(processed if every else processed.index_select(0, idx), dim=-1)
    chosen = lp.gather(1, (tokens if every else tokens.index_select(0, idx))[:, None]).squeeze(1)
    k = max(rows[r].params.logprobs or 0 for r in want)
    parts = [tokens.double(), chosen.double()]
    if k > 0:
        top_v, top_i = lp.topk(k, dim=-1)
        parts += [top_i.flatten().double(), top_v.flatten().double()]
    # One host transfer for the step: ids (exact in float64) and logprobs together.
    flat = torch.cat(parts).tolist()
    n, w = len(rows), len(want)
    ids = [int(t) for t in flat[:n]]
    top_ids, top_vals = flat[n + w : n + w + w * k], flat[n + w + w * k :]
    logprobs: list[tuple[float, list[tuple[int, float]]] | None] = [None] * n
    for j, r in enumerate(want):
        kr = rows[r].params.logprobs or 0
        # A grammar mask can leave fewer than k possible tokens: the rest are not alternatives.
        alts = [(int(i), v) for i, v in zip(top_ids[j * k : j * k + kr], top_vals[j * k : j * k + kr])
                if v != float("-inf")]
        logprobs[r] = (flat[n + j], alts)
    return StepResult(tokens=ids, logprobs=logprobs)


# Prompt positions turned into logits at once while scoring: the peak is this many rows
# of vocab-wide float32 (25 MB for a 49k vocabulary), whatever the chunk's length.
SCORE_PIECE = 128


def prompt_logprobs(
    scored: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor] | None,
    targets: list[int],
    top: int,
    vocab_size: int,
) -> list[tuple[float, list[tuple[int, float]]]]:
    """Per scored prompt position: the logprob of the token that follows it in the
    prompt (``targets``) and the ``top`` most likely tokens there, from the model's raw
    logits (no penalty or bias applies to a prompt). ``scored``: final hidden states
    that ``head`` turns into logits, or the logits themselves when ``head`` is None."""
    out: list[tuple[float, list[tuple[int, float]]]] = []
    want = torch.tensor(targets, dtype=torch.long, device=scored.device)
    for start in range(0, scored.shape[0], SCORE_PIECE):
        piece = scored[start : start + SCORE_PIECE]
        logits = (head(piece) if head is not None else piece)[:, :vocab_size].float()
        lp = torch.log_softmax(logits, dim=-1)
        chosen = lp.gather(1, want[start : start + SCORE_PIECE, None]).squeeze(1).tolist()
        if top:
            values, indices = lp.topk(top, dim=-1)
            alts = [list(zip(i, v)) for i, v in zip(indices.tolist(), values.tolist())]
        else:
            alts = [[] for _ in chosen]
        out.extend(zip(chosen, alts))
    return out
