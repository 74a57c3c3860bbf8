"""Output processing: a sampled token becomes a :class:`~inference.types.SequenceDelta`.

For one row of the scheduler and one sampled token: its text (UTF-8 completed by the
incremental detokenizer, stop strings held back or cut), whether it ends the sequence
(EOS, stop token ids, stop strings, ``max_tokens``, the end of a grammar) and its
finish reason, and its logprobs in the API's shape. Then, per step, the rows' deltas
grouped per request, the first one carrying what is reported once (prompt tokens found
in the prefix cache, prompt logprobs). Functions of the row and their arguments only:
no scheduler state, so each rule is testable without a model or a worker thread.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from .detokenize import TokenTable
from .types import SequenceDelta, TokenLogprob, TopLogprob

log = logging.getLogger(__name__)


def advance(row: Any, token: int, lp: tuple[float, list[tuple[int, float]]] | None, table: TokenTable,
            eos_ids: tuple[int, ...]) -> None:
    """One sampled token of ``row`` (a scheduler row: its sampling state, detokenizer,
    stop matcher and pending deltas): appends its delta and sets ``row.finished``. An
    EOS or stop token counts as a token of the sequence (token_ids, logprobs: usage
    counts it, as vLLM does) but adds its text only with ``include_stop_str_in_output``."""
    st = row.state
    p = st.params
    st.push(token)
    ends = len(st.generated) > p.min_tokens and token in st.ending_ids
    grammar_done = False  # the grammar cannot go on: the sequence ends after this token
    if st.constraint is not None:
        # The mask allows EOS only where the grammar can end, and there it ends the
        # sequence even with ignore_eos (nothing else could follow).
        ends = (token in eos_ids and st.constraint.can_end()) or (ends and token in p.stop_token_ids)
        if not ends:
            if not st.constraint.advance(token):
                if st.constraint.abort is not None:
                    # Too costly to follow (mask budget, parser limits): the request's
                    # rows leave at the end of this step, and it gets the error instead.
                    row.handle.error = row.handle.error or st.constraint.abort
                    row.handle.cancelled = True
                else:
                    log.warning("constrained row left its grammar: %s", st.constraint.error[:200])
            grammar_done = st.constraint.finished
    if ends:
        text = (row.detok.add(token) if p.include_stop_str_in_output else "") + row.detok.flush()
    else:
        text = row.detok.add(token)
    logprobs = (token_logprob(table, token, lp[0], lp[1], text),) if lp is not None else ()
    if len(st.generated) >= p.min_tokens:
        released, stopped = row.stopper.push(text)
    else:
        released, stopped = text, False
    finish = None
    if stopped or ends:
        finish = "stop"
    elif grammar_done or len(st.generated) >= p.max_tokens:
        finish = "stop" if grammar_done and not st.constraint.error else "length"
    if finish is not None and not stopped:
        # The end: incomplete UTF-8 and text held back for a possible stop string go out.
        tail = row.detok.flush()
        more, stopped = row.stopper.push(tail) if tail else ("", False)
        released += more if stopped else more + row.stopper.flush()
        finish = "stop" if stopped else finish
    row.finished = finish is not None
    row.pending.append(
        SequenceDelta(index=row.index, text=released, token_ids=(token,), logprobs=logprobs, finish_reason=finish)
    )


def token_logprob(table: TokenTable, token: int, logprob: float, top: list[tuple[int, float]],
                  text: str) -> TokenLogprob:
    """A token's logprob and its alternatives, with their texts and bytes."""
    return TokenLogprob(
        token=table.token_text(token),
        token_id=token,
        logprob=logprob,
        bytes=tuple(table.token_bytes(token)),
        top=tuple(
            TopLogprob(token=table.token_text(i), token_id=i, logprob=v, bytes=tuple(table.token_bytes(i)))
            for i, v in top
        ),
        text=text,
    )


def collect_pending(rows: list[Any]) -> list[tuple[Any, list[SequenceDelta]]]:
    """This step's deltas grouped per request (one thread-safe hand-off per request per
    step), in row order; a row's first delta carries its cached-token count and its
    prompt logprobs, once. Empties the rows' pending lists."""
    by_handle: dict[int, tuple[Any, list[SequenceDelta]]] = {}
    for row in rows:
        if row.pending:
            if not row.reported:
                row.reported = True
                scores = tuple(row.prompt_scores) if row.score_top is not None else ()
                row.pending[0] = replace(row.pending[0], cached_tokens=row.cached_tokens, prompt_logprobs=scores)
                row.score_top, row.prompt_scores = None, []
            entry = by_handle.setdefault(id(row.handle), (row.handle, []))
            entry[1].extend(row.pending)
            row.pending = []
    return list(by_handle.values())
