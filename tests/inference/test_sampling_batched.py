"""The vectorised sampler (inference.sampling) across a batch: every row gets what it
gets alone, whatever its neighbours ask for, and the work of a step is a fixed number
of tensor operations plus one draw per sampled row, not a loop over rows."""

from __future__ import annotations

import collections

import torch

from inference.sampling import RowState, sample_step, sequence_generator
from inference.types import SamplingParams

V = 300

MIXED = [
    dict(temperature=0),
    dict(temperature=0.8, seed=1),
    dict(temperature=1.0, top_p=0.9, seed=2),
    dict(temperature=0.7, top_k=20, seed=3),
    dict(temperature=1.2, min_p=0.05, seed=4),
    dict(temperature=0.9, top_k=5, top_p=0.8, min_p=0.01, seed=5),
    dict(temperature=0, repetition_penalty=1.3),
    dict(temperature=0.6, frequency_penalty=0.7, presence_penalty=0.3, seed=6),
    dict(temperature=0, logit_bias=((17, 5.0), (3, -100.0)), logprobs=3),
    dict(temperature=1.0, min_tokens=5, logprobs=0, seed=7),
    dict(temperature=0.5, top_k=V + 10, logprobs=5, seed=8),
]


def _row(params: dict, history: list[int]) -> RowState:
    p = SamplingParams(max_tokens=50, **params)
    return RowState(params=p, generator=sequence_generator(p.seed if p.seed is not None else 99, 0),
                    prompt_ids=[1, 2, 3], eos_ids=(0,), generated=list(history))


def _run(params_list, logits_rows, steps=12):
    """Tokens and logprobs per row over ``steps`` steps, each row's history growing."""
    rows = [_row(p, [5, 6, 5]) for p in params_list]
    out = [[] for _ in rows]
    for step in range(steps):
        logits = torch.stack([logits_rows[r][step] for r in range(len(rows))])
        res = sample_step(logits, rows, V)
        for r, row in enumerate(rows):
            row.push(res.tokens[r])
            out[r].append((res.tokens[r], res.logprobs[r]))
    return out


def test_every_row_gets_what_it_gets_alone():
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(12, V, generator=g) * 3 for _ in MIXED]
    together = _run(MIXED, logits)
    for r, params in enumerate(MIXED):
        assert _run([params], [logits[r]]) == [together[r]], params
    # Reversed order: the same again.
    backwards = _run(MIXED[::-1], logits[::-1])
    assert backwards[::-1] == together


def test_parameters_act_as_asked_in_a_mixed_batch():
    logits = torch.zeros(len(MIXED), V)
    logits[:, 40] = 4.0
    rows = [_row(p, [40, 40]) for p in MIXED]
    res = sample_step(logits, rows, V)
    assert res.tokens[0] == 40  # greedy
    assert res.tokens[8] == 17  # logit bias forces it
    chosen, alts = res.logprobs[8]
    assert alts[0][0] == 17 and len(alts) == 3 and chosen == alts[0][1]
    assert res.logprobs[9] is not None and res.logprobs[9][1] == []  # logprobs=0: the token's own only
    assert res.tokens[9] != 0  # min_tokens masks EOS
    assert res.logprobs[1] is None


def _top_level_ops(fn) -> collections.Counter:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    return collections.Counter(e.name for e in events
                               if not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::")))


def test_a_bigger_batch_adds_only_the_draws_of_its_sampled_rows():
    def ops(copies: int) -> collections.Counter:
        params = MIXED * copies
        rows = [_row(p, [5, 6]) for p in params]
        logits = torch.randn(len(rows), V)
        sample_step(logits, rows, V)  # penalty state built on first use
        return _top_level_ops(lambda: sample_step(logits, rows, V))

    one, four = ops(1), ops(4)
    sampled = sum(1 for p in MIXED if p.get("temperature", 1.0) > 0)
    # Three times as many sampled rows: three times as many scalar draws; nothing else
    # grows with the batch.
    assert four - one == collections.Counter({"aten::rand": 3 * sampled})
    assert not one - four
