"""Continuous batching over an engine-owned KV pool: one worker thread per loaded model.

This module is the consumer API (submit, cancel, jobs, stats) and the worker loop; the
rules it applies live apart, each testable alone: the scheduling policy (budgets, chunk
sizes, skip-ahead: :mod:`inference.scheduling_policy`), block accounting (block
tables, prefix lookups, forks: :class:`inference.kvcache.BlockManager`), and output
processing (text, stops, finish reasons, logprobs, per-request hand-off:
:mod:`inference.output_processing`).

The worker owns the model, a :class:`~inference.kvcache.KVPool` allocated once, and a
:class:`~inference.kvcache.BlockManager` that hands out its blocks. Each step, vLLM v1
style, one token budget is shared out: ``max_step_tokens`` while some row is decoding
(so a long prompt's prefill chunks keep streams flowing), ``max_prefill_tokens`` while
every row is still reading its prompt (nobody is waiting for a token, so the prompt is
read in big, faster steps):

1. running rows first, oldest first: a decoding row takes 1 token, a row still
   prefilling takes the next chunk of its prompt (chunked prefill is not a special
   case; while streams decode, chunks shrink as the context they attend to grows, so
   steps keep about the same cost). A row that needs a block when none is free
   preempts the newest running row, whose blocks are released and which later resumes
   by recomputation (helped by the prefix cache, which keeps its full blocks until they
   are evicted);
2. then, if nothing was preempted, waiting requests are admitted while rows, tokens of
   the budget and KV blocks allow. A request is admitted whole (its ``n`` rows at once)
   and needs the blocks of its prompt not already cached. A request that does not fit
   is skipped, so narrower ones behind it go first, until it has been skipped for
   ``max_skip_s``: then nothing more is admitted ahead of it (skip-ahead with aging);
3. one forward over all scheduled tokens laid end to end (see
   :mod:`inference.paged_attention`); rows whose tokens are all computed get their
   next token sampled (:mod:`inference.sampling`), detokenised and stop-checked
   (:mod:`inference.detokenize`). The ``n`` rows of a request share the prompt: its
   first row prefills it, the others fork from it when it is done (full blocks
   shared, the last partial block copied) and sample from the same logits.

Prompt scoring (``SamplingParams.prompt_logprobs``, for ``echo``) is a prefill like any
other, under the same budget and pool: its chunks also give the logprobs of the prompt
tokens they read, the LM head running over that chunk's positions only, in pieces
(:func:`inference.sampling.prompt_logprobs`), so a long prompt never holds ``prompt x
vocab`` logits nor stalls the streams. Such a row takes from the prefix cache only
positions already scored (a cached block has keys, not hidden states), so a new one
reads its whole prompt, and registers its blocks for others as usual. With
``max_tokens`` 0 it ends once its prompt is read; otherwise it goes on to generate, so
an echoed prompt is read once.

Finished and cancelled rows release their blocks at the end of the step. Results go
back to the consumer's event loop with ``loop.call_soon_threadsafe`` into that
request's own ``asyncio.Queue``: one call per request per step.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .detokenize import IncrementalDetokenizer, StopMatcher, TokenTable
from .errors import EngineOverloaded, InvalidInput, ModelUnavailable, check_vocabulary, context_length_exceeded
from .kvcache import BlockManager, KVPool
from .output_processing import advance, collect_pending, token_logprob
from .paged_attention import build_plan
from .runner import StepOutput, runner_for, step_forward
from .sampling import RowState, prompt_logprobs, sample_step, sequence_generator
from .scheduling_policy import SchedulerLimits, attention_span, chunk_tokens, may_be_overtaken, step_budget
from .types import GenerationRequest, SequenceDelta, TokenLogprob

__all__ = ["RequestHandle", "Scheduler", "SchedulerLimits", "attention_span"]

log = logging.getLogger(__name__)


class RequestHandle:
    """The consumer's side of one submitted request."""

    def __init__(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.loop = loop
        self.queue: asyncio.Queue[list[SequenceDelta] | BaseException] = asyncio.Queue()
        self.cancelled = False  # set by the consumer; read by the worker (a plain bool is atomic)
        self.skipped_since: float | None = None  # worker: when admission first passed it over
        self.error: BaseException | None = None  # worker: what ended it early (a grammar too costly)
        self._scheduler: Scheduler | None = None

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            if self._scheduler is not None:
                self._scheduler._on_cancel(self)

    def _deliver(self, item: list[SequenceDelta] | BaseException) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the consumer's loop is closed: nobody is listening
            self.cancelled = True


@dataclass
class _Row:
    """One sequence of a request, from admission to its end."""

    handle: RequestHandle
    index: int
    state: RowState
    detok: IncrementalDetokenizer
    stopper: StopMatcher
    tokens: list[int]  # prompt, then every generated token
    prompt_len: int
    blocks: list[int] = field(default_factory=list)  # block table
    computed: int = 0  # leading tokens whose keys/values are in the pool
    keyed: int = 0  # leading full blocks registered in the prefix cache
    last_key: bytes | None = None
    cached_tokens: int = 0  # prompt tokens found in the prefix cache at admission
    looked_up: bool = False  # counted in the prefix-cache hit rate already
    reported: bool = False  # cached_tokens went out with the first delta
    siblings: list[_Row] = field(default_factory=list)  # rows forking from this one after prefill
    # Prompt scoring (``prompt_logprobs``; sequence 0 only, until its first delta): how
    # many alternatives, and each prompt token's logprob so far (token 0 has none).
    score_top: int | None = None
    prompt_scores: list[TokenLogprob | None] = field(default_factory=lambda: [None])
    finished: bool = False
    pending: list[SequenceDelta] = field(default_factory=list)

    @property
    def width(self) -> int:
        return 1 + len(self.siblings)


class Scheduler:
    """Owns one model and its KV pool; see the module docstring."""

    def __init__(
        self,
        model: Any,
        table: TokenTable,
        pool: KVPool,
        *,
        vocab_size: int,
        context_length: int,
        eos_ids: tuple[int, ...],
        device: torch.device,
        limits: SchedulerLimits,
        bos_id: int | None,
        name: str,
    ) -> None:
        self.model = model
        self.runner = runner_for(model)  # None: transformers' forward serves the steps
        self.table = table
        self.pool = pool
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.eos_ids = eos_ids
        self.device = device
        self.limits = limits.normalised()
        self.max_batch_size = self.limits.max_batch_size
        self.max_queue = self.limits.max_queue
        self.max_step_tokens = self.limits.max_step_tokens
        self.max_prefill_tokens = self.limits.max_prefill_tokens
        self.max_skip_s = self.limits.max_skip_s
        self.attention_span = attention_span(getattr(model, "config", None))
        self.bos_id = bos_id
        self.blocks = BlockManager(pool.num_blocks, pool.block_size)
        self._watermark = max(1, pool.num_blocks // 100)
        self._cv = threading.Condition()
        self._waiting: collections.deque[RequestHandle] = collections.deque()
        self._waiting_seqs = 0
        self._jobs: collections.deque[Callable[..., None]] = collections.deque()
        self._stopping = False
        # Touched only by the worker thread (stats() reads lengths and ints).
        self._running: list[_Row] = []  # admission order; siblings live in their leader
        self._resume: collections.deque[_Row] = collections.deque()  # preempted, first in line
        self.preemptions = 0
        self._thread = threading.Thread(target=self._run, name=f"gen-{name}", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- consumer side
    def validate(self, request: GenerationRequest) -> None:
        """Reject what would crash the model or could never be served; raises InvalidInput."""
        ids = request.prompt_token_ids
        if request.n < 1:
            raise InvalidInput("n must be at least 1", param="n")
        if request.n > self.max_batch_size:
            raise InvalidInput(f"n={request.n} exceeds this model's batch size {self.max_batch_size}", param="n")
        if request.n > self.max_queue:
            raise InvalidInput(f"n={request.n} exceeds this model's queue bound {self.max_queue}", param="n")
        if not ids and self.bos_id is None:
            raise InvalidInput("the prompt is empty", param="prompt")
        check_vocabulary(ids, self.vocab_size)
        s = request.sampling
        if s.max_tokens < 0:
            raise InvalidInput("max_tokens must not be negative", param="max_tokens")
        total = max(len(ids), 1) + s.max_tokens
        if total > self.context_length:
            why = ""
            if self.context_length >= self.pool.capacity_tokens:
                why = f" (the limit of this server's KV cache, {self.pool.capacity_tokens} tokens)"
            raise context_length_exceeded(self.context_length, max(len(ids), 1), s.max_tokens, why=why)
        check_vocabulary([tid for tid, _ in s.logit_bias], self.vocab_size, param="logit_bias")
        check_vocabulary(s.stop_token_ids, self.vocab_size, param="stop_token_ids")
        if s.logprobs is not None and not 0 <= s.logprobs <= 20:
            raise InvalidInput("logprobs must be between 0 and 20", param="logprobs")
        if s.prompt_logprobs is not None and not 0 <= s.prompt_logprobs <= 20:
            raise InvalidInput("logprobs must be between 0 and 20", param="logprobs")

    def check_total(self, sequences: int) -> None:
        """A request of several prompts must fit the queue as a whole, or it could never run."""
        if sequences > self.max_queue:
            raise InvalidInput(
                f"this request asks for {sequences} sequences (prompts x n); this model queues at most "
                f"{self.max_queue}",
                param="n",
            )

    def submit(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> RequestHandle:
        self.validate(request)
        handle = RequestHandle(request, loop)
        handle._scheduler = self
        with self._cv:
            if self._stopping:
                raise ModelUnavailable("the model is being unloaded")
            if self._waiting_seqs + request.n > self.max_queue:
                raise EngineOverloaded(
                    f"too many requests waiting for this model ({self._waiting_seqs} sequences queued)",
                    retry_after=1.0,
                )
            self._waiting.append(handle)
            self._waiting_seqs += request.n
            self._cv.notify()
        return handle

    def run_job(self, fn: Callable[[], Any], loop: asyncio.AbstractEventLoop) -> asyncio.Future:
        """Run ``fn`` on the worker thread between steps; the future resolves on ``loop``."""
        fut: asyncio.Future = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            def apply() -> None:
                if not fut.done():
                    fut.set_result(value) if ok else fut.set_exception(value)

            try:
                loop.call_soon_threadsafe(apply)
            except RuntimeError:  # the caller's loop is gone
                pass

        def job(fail: BaseException | None = None) -> None:
            if fail is not None:
                settle(False, fail)
                return
            try:
                settle(True, fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                settle(False, exc)

        with self._cv:
            if self._stopping:
                raise ModelUnavailable("the model is being unloaded")
            self._jobs.append(job)
            self._cv.notify()
        return fut

    def stats(self) -> dict:
        """Rows and queue, and the KV pool: tokens in use (held by rows), tokens cached
        for reuse, capacity, preemptions so far and the prefix-cache hit rate."""
        bm, bs = self.blocks, self.pool.block_size
        with self._cv:
            running = sum(r.width for r in list(self._running))
            waiting = self._waiting_seqs + sum(r.width for r in list(self._resume))
        total = bm.num_blocks * bs
        return {
            "running": running,
            "waiting": waiting,
            "kv_tokens_used": bm.used * bs,
            "kv_tokens_cached": bm.cached_free() * bs,
            "kv_tokens_total": total,
            "kv_usage": round(bm.used * bs / total, 4) if total else 0.0,
            "kv_bytes_total": self.pool.nbytes,
            # Blocks ever written (on CPU: the pool's resident part; it stays committed).
            "kv_bytes_touched": self.pool.nbytes * bm.touched // bm.num_blocks if bm.num_blocks else 0,
            "preemptions": self.preemptions,
            "prefix_cache_queries": bm.queries,
            "prefix_cache_hits": bm.hits,
            "prefix_cache_hit_rate": round(bm.hits / bm.queries, 4) if bm.queries else 0.0,
        }

    def _on_cancel(self, handle: RequestHandle) -> None:
        # Still waiting: it leaves the queue now; admitted: the worker drops its rows at
        # the next step. Either way the worker wakes to see it.
        self._take(handle, wake=True)

    def _take(self, handle: RequestHandle, wake: bool = False) -> bool:
        """Remove ``handle`` from the waiting queue; False if it was not there."""
        with self._cv:
            if wake:
                self._cv.notify()  # it runs once the lock is released
            try:
                self._waiting.remove(handle)
            except ValueError:
                return False
            self._waiting_seqs -= handle.request.n
            return True

    def shutdown(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ------------------------------------------------------------------- worker side
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cv:
                while not (self._stopping or self._waiting or self._running or self._resume or self._jobs):
                    self._cv.wait()
                if self._stopping:
                    break
                jobs = list(self._jobs)
                self._jobs.clear()
            for job in jobs:
                job()
            try:
                with torch.inference_mode():
                    self._step()
            except Exception as exc:  # a failed forward must not kill the worker
                log.exception("generation step failed")
                for handle in {id(r.handle): r.handle for r in self._all_rows()}.values():
                    handle._deliver(ModelUnavailable(f"generation failed: {exc}"))
                self._reset_batch()
        self._fail_everything(ModelUnavailable("the model was unloaded"))

    def _all_rows(self) -> list[_Row]:
        rows = [r for lead in list(self._running) + list(self._resume) for r in [lead, *lead.siblings]]
        return rows

    def _fail_everything(self, exc: BaseException) -> None:
        with self._cv:
            waiting = list(self._waiting)
            self._waiting.clear()
            self._waiting_seqs = 0
            jobs = list(self._jobs)
            self._jobs.clear()
        for job in jobs:
            job(exc)
        for handle in waiting + [r.handle for r in self._all_rows()]:
            handle._deliver(exc)
        self._reset_batch()

    def _reset_batch(self) -> None:
        with self._cv:
            self._running = []
            self._resume.clear()
        self.blocks = BlockManager(self.pool.num_blocks, self.pool.block_size)

    def _step(self) -> None:
        self._drop(lambda row: row.handle.cancelled)
        plan = self._schedule()
        if plan:
            self._forward(plan)
        outbox = self._collect_pending()
        # Finished rows leave (and free their blocks) before their last delta is handed
        # over, so a consumer that saw its sequence end also sees the freed slot in stats().
        self._drop(lambda row: row.finished or row.handle.cancelled)
        for handle, deltas in outbox:
            if handle.error is not None:
                handle._deliver(handle.error)
            elif not handle.cancelled:
                handle._deliver(deltas)

    # --------------------------------------------------------------------- schedule
    def _schedule(self) -> list[tuple[_Row, int]]:
        """This step's rows and how many tokens each feeds (see the module docstring)."""
        # Small steps while streams are decoding (a long prompt's chunks must not stall
        # them); big ones while nobody waits for a token (prefill runs at full speed).
        decoding = any(len(row.tokens) - row.computed <= 1 for row in self._running)
        budget = step_budget(self.limits, decoding)
        plan: list[tuple[_Row, int]] = []
        preempted = False
        i = 0
        while i < len(self._running) and budget > 0:
            row = self._running[i]
            take = self._chunk(row, budget, decoding)
            if self.blocks.grow(row.blocks, row.computed + take):
                plan.append((row, take))
                budget -= take
                i += 1
                continue
            preempted = True
            victim = self._running[-1]
            self._preempt(victim)
            if victim is row:
                break
        if not preempted:
            self._admit(budget, plan, decoding)
        return plan

    def _chunk(self, row: _Row, budget: int, decoding: bool) -> int:
        """Tokens ``row`` feeds this step (:func:`inference.scheduling_policy.chunk_tokens`)."""
        return chunk_tokens(len(row.tokens) - row.computed, budget, row.computed, decoding=decoding,
                            max_step_tokens=self.max_step_tokens, span=self.attention_span)

    def _preempt(self, row: _Row) -> None:
        """Free a running row's blocks; it resumes later by recomputing (prefix cache first)."""
        self._running.remove(row)
        self.blocks.release(row.blocks)
        row.blocks, row.computed, row.keyed, row.last_key = [], 0, 0, None
        self.preemptions += 1
        with self._cv:
            self._resume.appendleft(row)

    def _admit(self, budget: int, plan: list[tuple[_Row, int]], decoding: bool) -> int:
        """Admit preempted rows, then waiting requests, while budget, rows and blocks allow."""
        rows_free = self.max_batch_size - sum(r.width for r in self._running)
        while self._resume and budget > 0:
            row = self._resume[0]
            if row.width > rows_free or not self._start(row, headroom=row.width - 1):
                return budget
            with self._cv:
                self._resume.popleft()
            rows_free -= row.width
            budget = self._plan_new(row, budget, plan, decoding)
        now = time.monotonic()
        with self._cv:
            candidates = list(self._waiting)
        for handle in candidates:
            if budget <= 0 or rows_free <= 0:
                break
            if handle.cancelled:
                continue
            n = handle.request.n
            if handle.request.sampling.max_tokens == 0 and handle.request.sampling.prompt_logprobs is None:
                self._take(handle)
                handle._deliver([SequenceDelta(index=i, text="", finish_reason="length") for i in range(n)])
                continue
            leader = self._make_rows(handle) if n <= rows_free else None
            if leader is not None and self._start(leader, headroom=n - 1):
                self._take(handle)
                rows_free -= n
                budget = self._plan_new(leader, budget, plan, decoding)
                continue
            # It does not fit now: let narrower requests behind it go first, for a while.
            if handle.skipped_since is None:
                handle.skipped_since = now
            if not may_be_overtaken(handle.skipped_since, now, self.max_skip_s):
                break
        return budget

    def _start(self, row: _Row, headroom: int) -> bool:
        """Look the row's tokens up in the prefix cache and check the pool can hold the
        rest (plus ``headroom`` blocks for forks and a watermark); undo on failure."""
        bs = self.pool.block_size
        limit = len(row.tokens) - 1  # at least one token is computed, for its logits
        if row.score_top is not None:
            # A cached block has no hidden states: reuse stops where the logprobs still
            # owed begin (a row first admitted reads its whole prompt).
            limit = min(limit, len(row.prompt_scores) - 1)
        # The watermark keeps room for running rows to grow; with none running, a row
        # that fits at all must get in (it may need the whole pool).
        got = self.blocks.admit(row.tokens, limit, headroom + (self._watermark if self._running else 0))
        if got is None:
            return False
        found, key = got
        row.blocks, row.keyed, row.last_key = found, len(found), key
        row.computed = len(found) * bs
        if not row.looked_up:
            row.looked_up = True
            row.cached_tokens = row.computed
            self.blocks.record_lookup(row.prompt_len, row.computed)
        return True

    def _plan_new(self, row: _Row, budget: int, plan: list[tuple[_Row, int]], decoding: bool) -> int:
        self._running.append(row)
        take = self._chunk(row, budget, decoding)
        # The whole prompt's blocks at once (``_start`` checked they are free): handed out
        # together they are usually consecutive, and attention then reads the row's keys
        # in place instead of gathering them at every chunk.
        if not self.blocks.grow(row.blocks, len(row.tokens)):  # cannot happen after _start's check
            raise RuntimeError("KV pool accounting error")
        plan.append((row, take))
        return budget - take

    def _make_rows(self, handle: RequestHandle) -> _Row:
        """The request's first row, carrying the others as siblings until its prefill ends."""
        s = handle.request.sampling
        grammar = handle.request.grammar
        prompt = list(handle.request.prompt_token_ids) or [self.bos_id]
        rows = [
            _Row(
                handle=handle,
                index=i,
                state=RowState(
                    params=s, generator=sequence_generator(s.seed, i), prompt_ids=prompt, eos_ids=self.eos_ids,
                    constraint=grammar.matcher() if grammar is not None else None,
                ),
                detok=IncrementalDetokenizer(self.table, skip_special_tokens=s.skip_special_tokens),
                stopper=StopMatcher(s.stop, include_stop=s.include_stop_str_in_output),
                tokens=list(prompt),
                prompt_len=len(prompt),
            )
            for i in range(handle.request.n)
        ]
        rows[0].siblings = rows[1:]
        rows[0].score_top = s.prompt_logprobs
        return rows[0]

    # ---------------------------------------------------------------------- forward
    def _forward(self, plan: list[tuple[_Row, int]]) -> None:
        ids: list[int] = []
        pos: list[int] = []
        spans: list[tuple[list[int], int, int]] = []
        keep: list[int] = []
        ready: list[_Row] = []
        unsampled: list[_Row] = []  # prompts read for their logprobs only (max_tokens 0)
        score: list[int] = []  # step positions whose next prompt token is scored
        scoring: list[tuple[_Row, list[int]]] = []  # per scoring row: those next tokens
        for row, take in plan:
            start = row.computed
            ids.extend(row.tokens[start : start + take])
            pos.extend(range(start, start + take))
            spans.append((row.blocks, start, take))
            if row.score_top is not None:
                # Position p scores prompt token p + 1; positions before the first token
                # still owed were scored before a preemption.
                first, end = max(start, len(row.prompt_scores) - 1), min(start + take, row.prompt_len - 1)
                if first < end:
                    offset = len(ids) - take - start
                    score.extend(range(offset + first, offset + end))
                    scoring.append((row, row.tokens[first + 1 : end + 1]))
            if start + take == len(row.tokens):
                if row.state.params.max_tokens == 0:
                    unsampled.append(row)
                else:
                    ready.append(row)
                    keep.append(len(ids) - 1)
        kv_plan = build_plan(self.pool.keys, self.pool.values, self.pool.block_size, spans)
        out = step_forward(self.model, self.runner, ids, pos, kv_plan, keep, score, self.device)
        for row, take in plan:
            row.computed += take
            self._register_full_blocks(row)
        if scoring:
            self._score(scoring, out)
        for row in unsampled:
            row.finished = True
            for index in (row.index, *(sib.index for sib in row.siblings)):
                row.pending.append(SequenceDelta(index=index, text="", finish_reason="length"))
        logits = out.logits
        if logits is None:
            return
        rows: list[_Row] = []
        which: list[int] = []
        for j, row in enumerate(ready):
            group = [row, *self._fork(row)]
            rows.extend(group)
            which.extend([j] * len(group))
        if len(which) != len(ready):
            logits = logits.index_select(0, torch.tensor(which, device=logits.device))
        self._apply(rows, logits)

    def _score(self, scoring: list[tuple[_Row, list[int]]], out: StepOutput) -> None:
        """This step's prompt logprobs, one head pass over every scoring row's positions."""
        targets = [t for _, tokens in scoring for t in tokens]
        top = max(row.score_top or 0 for row, _ in scoring)
        results = iter(prompt_logprobs(out.scored, out.head, targets, top, self.vocab_size))
        for row, tokens in scoring:
            for token, (logprob, alts) in zip(tokens, results):
                row.prompt_scores.append(self._token_logprob(token, logprob, alts[: row.score_top], ""))

    def _register_full_blocks(self, row: _Row) -> None:
        row.keyed, row.last_key = self.blocks.register_full(row.blocks, row.tokens, row.keyed, row.computed,
                                                            row.last_key)

    def _fork(self, leader: _Row) -> list[_Row]:
        """The leader's prompt is in the pool: its siblings share the full blocks, get a
        copy of the partial last one, and run from here as rows of their own."""
        if not leader.siblings:
            return []
        bs = self.pool.block_size
        full, partial = divmod(leader.computed, bs)
        forked = []
        for sib in leader.siblings:
            got = self.blocks.fork(leader.blocks, leader.computed)
            if got is None:  # the pool is short: this sibling recomputes later instead
                with self._cv:
                    self._resume.append(sib)
                continue
            sib.blocks, tail = got
            if tail is not None:
                self.pool.copy_block(leader.blocks[full], tail, partial)
            sib.computed, sib.keyed, sib.last_key = leader.computed, leader.keyed, leader.last_key
            sib.cached_tokens = leader.cached_tokens
            forked.append(sib)
        leader.siblings = []
        self._running.extend(forked)
        return forked

    def _drop(self, gone: Callable[[_Row], bool]) -> None:
        """Rows that finished or were cancelled leave and release their blocks."""
        for lead in list(self._running):
            if gone(lead):
                self._running.remove(lead)
                self.blocks.release(lead.blocks)
                lead.blocks = []  # unforked siblings share its handle, so they go too
        for row in list(self._resume):
            if gone(row):
                with self._cv:
                    self._resume.remove(row)

    def _apply(self, rows: list[_Row], logits: torch.Tensor) -> None:
        """Sample one token per row and turn it into deltas."""
        result = sample_step(logits, [r.state for r in rows], self.vocab_size)
        for row, token, lp in zip(rows, result.tokens, result.logprobs):
            advance(row, token, lp, self.table, self.eos_ids)
            if not row.finished:
                row.tokens.append(token)

    def _token_logprob(self, token: int, logprob: float, top: list[tuple[int, float]], text: str) -> TokenLogprob:
        return token_logprob(self.table, token, logprob, top, text)

    def _collect_pending(self) -> list[tuple[RequestHandle, list[SequenceDelta]]]:
        """Group this step's deltas per request (:func:`inference.output_processing.collect_pending`)."""
        return collect_pending(self._running)
