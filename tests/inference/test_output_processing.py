"""Output processing (inference.output_processing) on its own: a sampled token becomes
a delta with its text, its finish reason and its logprobs; a step's deltas go out per
request, the first one carrying what is reported once. The real SmolLM2 tokenizer, no
model and no worker thread."""

from __future__ import annotations

import asyncio

import pytest

from inference.detokenize import IncrementalDetokenizer, StopMatcher, TokenTable
from inference.output_processing import advance, collect_pending
from inference.sampling import RowState, sequence_generator
from inference.scheduler import RequestHandle, _Row
from inference.types import GenerationRequest, SamplingParams

EOS = 2


@pytest.fixture(scope="module")
def table(smol_tokenizer):
    return TokenTable(smol_tokenizer)


def _row(table, handle=None, index=0, **params) -> _Row:
    p = SamplingParams(**params)
    handle = handle or RequestHandle(GenerationRequest(request_id="r", prompt_token_ids=(1,), sampling=p),
                                     asyncio.new_event_loop())
    return _Row(handle=handle, index=index,
                state=RowState(params=p, generator=sequence_generator(0, index), prompt_ids=[1], eos_ids=(EOS,)),
                detok=IncrementalDetokenizer(table, skip_special_tokens=p.skip_special_tokens),
                stopper=StopMatcher(p.stop, include_stop=p.include_stop_str_in_output), tokens=[1], prompt_len=1)


def _feed(row, table, text_ids):
    for t in text_ids:
        advance(row, t, None, table, (EOS,))
        if row.finished:
            break
    return row.pending


def test_max_tokens_ends_with_length(smol_tokenizer, table):
    ids = smol_tokenizer.encode(" one two three four", add_special_tokens=False)
    row = _row(table, max_tokens=2)
    deltas = _feed(row, table, ids)
    assert [d.finish_reason for d in deltas] == [None, "length"]
    assert "".join(d.text for d in deltas) == smol_tokenizer.decode(ids[:2])


def test_eos_is_counted_but_adds_no_text(smol_tokenizer, table):
    ids = smol_tokenizer.encode(" Paris", add_special_tokens=False) + [EOS]
    deltas = _feed(_row(table, max_tokens=10), table, ids)
    assert deltas[-1].finish_reason == "stop" and deltas[-1].token_ids == (EOS,)
    assert "".join(d.text for d in deltas) == " Paris"


def test_a_stop_string_is_cut_and_held_back_text_released(smol_tokenizer, table):
    ids = smol_tokenizer.encode(" red, green. blue", add_special_tokens=False)
    deltas = _feed(_row(table, max_tokens=20, stop=(".",)), table, ids)
    assert deltas[-1].finish_reason == "stop"
    assert "".join(d.text for d in deltas) == " red, green"


def test_logprobs_carry_the_token_text(smol_tokenizer, table):
    ids = smol_tokenizer.encode(" Paris", add_special_tokens=False)
    row = _row(table, max_tokens=1)
    advance(row, ids[0], (-0.5, [(ids[0], -0.5), (EOS, -2.0)]), table, (EOS,))
    (lp,) = row.pending[0].logprobs
    assert lp.token == " Paris" and lp.logprob == -0.5 and [t.token_id for t in lp.top] == [ids[0], EOS]


def test_a_steps_deltas_go_out_per_request_and_the_first_reports_cached_tokens(smol_tokenizer, table):
    ids = smol_tokenizer.encode(" a b", add_special_tokens=False)
    first = _row(table, max_tokens=5)
    sibling = _row(table, handle=first.handle, index=1, max_tokens=5)
    other = _row(table, max_tokens=5)
    first.cached_tokens = 16
    for row in (first, sibling, other):
        advance(row, ids[0], None, table, (EOS,))
    out = collect_pending([first, other, sibling])
    assert [h for h, _ in out] == [first.handle, other.handle]
    mine = out[0][1]
    assert [d.index for d in mine] == [0, 1] and mine[0].cached_tokens == 16
    assert not first.pending and first.reported
    advance(first, ids[1], None, table, (EOS,))
    (again,) = collect_pending([first])
    assert again[1][0].cached_tokens is None  # reported once
