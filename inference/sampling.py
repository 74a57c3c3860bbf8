"""Per-row logits processing and token sampling for one decode step of a batch.

Every row of a batch carries its own :class:`SamplingParams` and its own
``torch.Generator``; this module turns a ``[rows, vocab]`` logits tensor into one
token per row, and (when asked) log-probabilities.

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

    @property
    def needs_processing(self) -> bool:
        p = self.params
        return bool(
            p.repetition_penalty != 1.0
            or p.presence_penalty
            or p.frequency_penalty
            or p.logit_bias
            or (p.min_tokens > len(self.generated) and self.ending_ids)
        )


@dataclass
class StepResult:
    """Sampled token per row, plus logprob data for the rows that asked."""

    tokens: list[int]
    # per row: None, or (chosen logprob, [(token_id, logprob), ...] top alternatives)
    logprobs: list[tuple[float, list[tuple[int, float]]] | None]


def process_logits(logits: torch.Tensor, rows: list[RowState], vocab_size: int) -> torch.Tensor:
    """Steps 1-4 above, in place on a float32 copy; returns it."""
    logits = logits.float().clone()
    if logits.shape[-1] > vocab_size:
        # Padded embedding matrices: never sample ids the tokenizer cannot decode.
        logits[:, vocab_size:] = float("-inf")
    for r, row in enumerate(rows):
        if not row.needs_processing:
            continue
        p = row.params
        x = logits[r]
        if p.repetition_penalty != 1.0:
            seen = row.seen_mask(x.shape[0], x.device)
            x.copy_(torch.where(seen, torch.where(x > 0, x / p.repetition_penalty, x * p.repetition_penalty), x))
        if (p.presence_penalty or p.frequency_penalty) and row.generated:
            counts = row.token_counts(x.shape[0], x.device)
            x -= counts * p.frequency_penalty + (counts > 0).to(x.dtype) * p.presence_penalty
        if p.logit_bias:
            ids = torch.tensor([t for t, _ in p.logit_bias], dtype=torch.long, device=x.device)
            bias = torch.tensor([b for _, b in p.logit_bias], dtype=x.dtype, device=x.device)
            x.index_add_(0, ids, bias)
        if p.min_tokens > len(row.generated) and row.ending_ids:
            x[list(row.ending_ids)] = float("-inf")
    return logits


def _sample_rows(logits: torch.Tensor, rows: list[RowState]) -> list[int]:
    """Non-greedy rows: temperature, top-k, top-p, min-p, then a seeded inverse-CDF draw.

    Only rows with top_p sort their distribution (a stable descending sort, so equal
    probabilities keep id order); the others draw over the vocabulary in id order,
    top-k and min-p being thresholds, so a plain sampled row costs O(vocab)."""
    temps = torch.tensor([row.params.temperature for row in rows], dtype=torch.float32, device=logits.device)
    probs = torch.softmax(logits / temps[:, None], dim=-1)
    tokens = [0] * len(rows)
    nucleus = [r for r, row in enumerate(rows) if row.params.top_p < 1.0]
    plain = [r for r, row in enumerate(rows) if row.params.top_p >= 1.0]
    if plain:
        p = probs if len(plain) == len(rows) else probs.index_select(0, torch.tensor(plain, device=probs.device))
        keep = torch.ones_like(p, dtype=torch.bool)
        for j, r in enumerate(plain):
            params = rows[r].params
            if params.top_k and 0 < params.top_k < p.shape[-1]:
                keep[j] &= p[j] >= torch.topk(p[j], params.top_k).values[-1]
            if params.min_p > 0.0:
                keep[j] &= p[j] >= params.min_p * p[j].max()
        picks = _draw(torch.where(keep, p, torch.zeros_like(p)), [rows[r] for r in plain])
        for r, t in zip(plain, picks.tolist()):
            tokens[r] = t
    if nucleus:
        p = probs.index_select(0, torch.tensor(nucleus, device=probs.device))
        sorted_p, sorted_ids = torch.sort(p, dim=-1, descending=True, stable=True)
        keep = torch.ones_like(sorted_p, dtype=torch.bool)
        for j, r in enumerate(nucleus):
            params = rows[r].params
            if params.top_k and params.top_k > 0:
                keep[j, params.top_k:] = False
            cum = torch.cumsum(sorted_p[j], dim=-1)
            # Keep the smallest prefix whose mass reaches top_p (the token crossing it stays).
            keep[j] &= (cum - sorted_p[j]) < params.top_p
            if params.min_p > 0.0:
                keep[j] &= sorted_p[j] >= params.min_p * sorted_p[j, 0]
        keep[:, 0] = True  # never an empty distribution
        pos = _draw(torch.where(keep, sorted_p, torch.zeros_like(sorted_p)), [rows[r] for r in nucleus])
        for r, t in zip(nucleus, sorted_ids.gather(1, pos[:, None]).squeeze(1).tolist()):
            tokens[r] = t
    return tokens


def _draw(weights: torch.Tensor, rows: list[RowState]) -> torch.Tensor:
    """One index per row, drawn in proportion to ``weights`` with each row's generator."""
    cdf = torch.cumsum(weights.double(), dim=-1)
    u = torch.stack([torch.rand((), generator=row.generator, dtype=torch.float64) for row in rows]).to(cdf.device)
    pos = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(1)
    pos = pos.clamp_(max=cdf.shape[-1] - 1)
    # u*total can equal a cdf entry exactly and land on a zero-weight id: step back to
    # the last id with weight (the cdf is flat over zero-weight ids).
    bad = weights.gather(1, pos[:, None]).squeeze(1) <= 0
    if bool(bad.any()):
        for j in torch.nonzero(bad).flatten().tolist():
            pos[j] = int(torch.nonzero(weights[j] > 0).flatten()[-1])
    return pos


def sample_step(logits: torch.Tensor, rows: list[RowState], vocab_size: int) -> StepResult:
    """One token per row from ``logits`` ``[len(rows), vocab]``; see the module docstring."""
    processed = process_logits(logits, rows, vocab_size)
    apply_masks(processed, [row.constraint for row in rows])
    tokens: list[int] = [0] * len(rows)
    greedy = [r for r, row in enumerate(rows) if row.greedy]
    if greedy:
        idx = torch.tensor(greedy, device=processed.device)
        picks = processed.index_select(0, idx).argmax(dim=-1).tolist()
        for r, t in zip(greedy, picks):
            tokens[r] = t
    sampled = [r for r, row in enumerate(rows) if not row.greedy]
    if sampled:
        idx = torch.tensor(sampled, device=processed.device)
        picks = _sample_rows(processed.index_select(0, idx), [rows[r] for r in sampled])
        for r, t in zip(sampled, picks):
            tokens[r] = t

    logprobs: list[tuple[float, list[tuple[int, float]]] | None] = [None] * len(rows)
    want = [r for r, row in enumerate(rows) if row.params.logprobs is not None]
    if want:
        idx = torch.tensor(want, device=processed.device)
        lp = torch.log_softmax(processed.index_select(0, idx), dim=-1)
        k = max(rows[r].params.logprobs or 0 for r in want)
        top_v, top_i = (lp.topk(k, dim=-1) if k > 0 else (None, None))
        chosen = lp.gather(1, torch.tensor([[tokens[r]] for r in want], device=lp.device)).squeeze(1).tolist()
        for j, r in enumerate(want):
            kr = rows[r].params.logprobs or 0
            alts = []
            if kr > 0 and top_v is not None:
                # A grammar mask can leave fewer than k possible tokens: the rest are not alternatives.
                alts = [(i, v) for i, v in zip(top_i[j, :kr].tolist(), top_v[j, :kr].tolist()) if v != float("-inf")]
            logprobs[r] = (chosen[j], alts)
    return StepResult(tokens=tokens, logprobs=logprobs)


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
