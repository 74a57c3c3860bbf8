"""Continuous batching: one worker thread per loaded generation model.

The worker owns the model and a left-padded batch: a ``DynamicCache`` whose per-layer
key/value tensors are ``[rows, heads, T, head_dim]``, a ``[rows, T]`` attention mask
(0 = padding) and, per row, the position id of its next token (so RoPE sees each
sequence's real positions whatever padding sits to its left).

Each loop iteration:

1. drop rows whose request was cancelled (the consumer closed its async generator);
2. admit waiting requests (FIFO) while rows are free: prefill all newcomers in one
   left-padded forward (each prompt once, however large its ``n``), sample the first
   token of each sequence, repeat each prompt's KV ``n`` times and merge it into the
   batch (left-padding whichever side is shorter) - so a newcomer joins at the next
   decode step instead of waiting for the batch to drain;
3. one decode step for all rows: a single forward of ``[rows, 1]`` tokens, per-row
   sampling (:mod:`inference.sampling`), detokenisation and stop handling
   (:mod:`inference.detokenize`);
4. finished rows leave: the cache is index-selected down to the surviving rows and
   leading all-padding columns are trimmed.

Results go back to the event loop of the consumer with ``loop.call_soon_threadsafe``
into that request's own ``asyncio.Queue``: one call per request per step carrying a
list of :class:`SequenceDelta` (or an exception). Rows never share state, so results
cannot cross between requests.

Limitation: the merge/compaction code handles full-attention ``DynamicLayer`` caches
(Llama, Mistral, Qwen2, ... without sliding windows), which covers the bundled models.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from .detokenize import IncrementalDetokenizer, StopMatcher, TokenTable
from .errors import EngineOverloaded, InvalidInput, ModelUnavailable
from .sampling import RowState, sample_step, sequence_generator
from .types import GenerationRequest, SequenceDelta, TokenLogprob, TopLogprob

log = logging.getLogger(__name__)

# Max padded tokens (rows x longest prompt) in one prefill forward.
_PREFILL_TOKEN_BUDGET = 8192


class RequestHandle:
    """The consumer's side of one submitted request."""

    def __init__(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.loop = loop
        self.queue: asyncio.Queue[list[SequenceDelta] | BaseException] = asyncio.Queue()
        self.cancelled = False  # set by the consumer; read by the worker (a plain bool is atomic)
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
    """One sequence of a request while it is in the batch."""

    handle: RequestHandle
    index: int
    state: RowState
    detok: IncrementalDetokenizer
    stopper: StopMatcher
    next_position: int  # position id of the token fed at the next decode step
    finished: bool = False
    pending: list[SequenceDelta] = field(default_factory=list)


class Scheduler:
    """Owns one model; see the module docstring."""

    def __init__(
        self,
        model: Any,
        table: TokenTable,
        *,
        vocab_size: int,
        context_length: int,
        eos_ids: tuple[int, ...],
        device: torch.device,
        max_batch_size: int,
        max_queue: int,
        bos_id: int | None,
        name: str,
    ) -> None:
        self.model = model
        self.table = table
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.eos_ids = eos_ids
        self.device = device
        self.max_batch_size = max(1, max_batch_size)
        self.max_queue = max(0, max_queue)
        self.bos_id = bos_id
        self._cv = threading.Condition()
        self._waiting: collections.deque[RequestHandle] = collections.deque()
        self._waiting_seqs = 0
        self._jobs: collections.deque[Callable[..., None]] = collections.deque()
        self._stopping = False
        # Batch state, touched only by the worker thread.
        self._rows: list[_Row] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None
        self._thread = threading.Thread(target=self._run, name=f"gen-{name}", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- consumer side
    def validate(self, request: GenerationRequest) -> None:
        """Reject what would crash the model; raises InvalidInput."""
        ids = request.prompt_token_ids
        if request.n < 1:
            raise InvalidInput("n must be at least 1", param="n")
        if request.n > self.max_batch_size:
            raise InvalidInput(f"n={request.n} exceeds this model's batch size {self.max_batch_size}", param="n")
        if request.n > self.max_queue:
            raise InvalidInput(f"n={request.n} exceeds this model's queue bound {self.max_queue}", param="n")
        if not ids and self.bos_id is None:
            raise InvalidInput("the prompt is empty", param="prompt")
        bad = [t for t in ids if not 0 <= int(t) < self.vocab_size]
        if bad:
            raise InvalidInput(f"token id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})", param="prompt")
        s = request.sampling
        if s.max_tokens < 0:
            raise InvalidInput("max_tokens must not be negative", param="max_tokens")
        total = max(len(ids), 1) + s.max_tokens
        if total > self.context_length:
            raise InvalidInput(
                f"This model's maximum context length is {self.context_length} tokens. However, you requested "
                f"{total} tokens ({len(ids)} in the messages, {s.max_tokens} in the completion).",
                param="prompt",
                code="context_length_exceeded",
            )
        for tid, _ in s.logit_bias:
            if not 0 <= int(tid) < self.vocab_size:
                raise InvalidInput(f"logit_bias token id {tid} is outside the vocabulary", param="logit_bias")
        for tid in s.stop_token_ids:
            if not 0 <= int(tid) < self.vocab_size:
                raise InvalidInput(f"token id {tid} is outside the vocabulary", param="stop_token_ids")
        if s.logprobs is not None and not 0 <= s.logprobs <= 20:
            raise InvalidInput("logprobs must be between 0 and 20", param="logprobs")

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
        """Run ``fn`` on the worker thread between decode steps; the future resolves on ``loop``."""
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
        with self._cv:
            return {"running": len(self._rows), "waiting": self._waiting_seqs}

    def _on_cancel(self, handle: RequestHandle) -> None:
        with self._cv:
            try:
                self._waiting.remove(handle)
                self._waiting_seqs -= handle.request.n
            except ValueError:
                pass  # already admitted: the worker drops its rows at the next step
            self._cv.notify()

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
                while not self._stopping and not self._waiting and not self._rows and not self._jobs:
                    self._cv.wait()
                if self._stopping:
                    break
                jobs = list(self._jobs)
                self._jobs.clear()
                admitted: list[RequestHandle] = []
                free = self.max_batch_size - len(self._rows)
                while self._waiting and self._waiting[0].request.n <= free:
                    handle = self._waiting.popleft()
                    self._waiting_seqs -= handle.request.n
                    if handle.cancelled:
                        continue
                    admitted.append(handle)
                    free -= handle.request.n
            for job in jobs:
                job()
            try:
                with torch.inference_mode():
                    self._step(admitted)
            except Exception as exc:  # a failed forward must not kill the worker
                log.exception("generation step failed")
                failed = {id(r.handle): r.handle for r in self._rows}
                failed.update({id(h): h for h in admitted})
                for handle in failed.values():
                    handle._deliver(ModelUnavailable(f"generation failed: {exc}"))
                self._reset_batch()
        self._fail_everything(ModelUnavailable("the model was unloaded"))

    def _fail_everything(self, exc: BaseException) -> None:
        with self._cv:
            waiting = list(self._waiting)
            self._waiting.clear()
            self._waiting_seqs = 0
            jobs = list(self._jobs)
            self._jobs.clear()
        for job in jobs:
            job(exc)
        for handle in waiting + [r.handle for r in self._rows]:
            handle._deliver(exc)
        self._reset_batch()

    def _reset_batch(self) -> None:
        self._rows = []
        self._cache = None
        self._mask = None

    def _step(self, admitted: list[RequestHandle]) -> None:
        self._drop(lambda row: row.handle.cancelled)
        self._prefill_all([h for h in admitted if not h.cancelled])
        self._deliver_and_compact()
        if not self._rows:
            return
        self._decode()
        self._deliver_and_compact()

    def _deliver_and_compact(self) -> None:
        # Finished rows leave the batch before their last delta is handed over, so a
        # consumer that saw its sequence end also sees the freed slot in stats().
        outbox = self._collect_pending()
        self._drop(lambda row: row.finished or row.handle.cancelled)
        for handle, deltas in outbox:
            if not handle.cancelled:
                handle._deliver(deltas)

    def _make_rows(self, handle: RequestHandle, prompt: list[int]) -> list[_Row]:
        s = handle.request.sampling
        grammar = handle.request.grammar
        return [
            _Row(
                handle=handle,
                index=i,
                state=RowState(
                    params=s, generator=sequence_generator(s.seed, i), prompt_ids=prompt, eos_ids=self.eos_ids,
                    constraint=grammar.matcher() if grammar is not None else None,
                ),
                detok=IncrementalDetokenizer(self.table, skip_special_tokens=s.skip_special_tokens),
                stopper=StopMatcher(s.stop, include_stop=s.include_stop_str_in_output),
                next_position=len(prompt),
            )
            for i in range(handle.request.n)
        ]

    def _prefill_all(self, handles: list[RequestHandle]) -> None:
        """Prefill newcomers in groups of similar size (one padded forward per group)."""
        queued = []
        for handle in handles:
            if handle.request.sampling.max_tokens == 0:
                handle._deliver(
                    [SequenceDelta(index=i, text="", finish_reason="length") for i in range(handle.request.n)]
                )
            else:
                queued.append((list(handle.request.prompt_token_ids) or [self.bos_id], handle))
        queued.sort(key=lambda item: len(item[0]))
        group: list[tuple[list[int], RequestHandle]] = []
        for item in queued:
            width = len(item[0])
            # Bound the padded prefill so long prompts do not blow up attention memory.
            if group and width * (len(group) + 1) > _PREFILL_TOKEN_BUDGET:
                self._prefill_group(group)
                group = []
            group.append(item)
        if group:
            self._prefill_group(group)

    def _prefill_group(self, group: list[tuple[list[int], RequestHandle]]) -> None:
        width = max(len(p) for p, _ in group)
        pad = self.eos_ids[0] if self.eos_ids else 0
        ids = torch.tensor([[pad] * (width - len(p)) + p for p, _ in group], dtype=torch.long, device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p, _ in group], dtype=torch.long, device=self.device)
        cache = DynamicCache(config=self.model.config)
        if len(group) == 1:
            out = self.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        else:
            pos = (mask.cumsum(dim=1) - 1).clamp_(min=0)
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)
            keep = mask.bool()[:, None, :, None]
            for layer in cache.layers:
                # Padding positions are never attended to, but NaN * 0 is NaN: zero them.
                layer.keys = torch.where(keep, layer.keys, torch.zeros((), dtype=layer.keys.dtype, device=self.device))
                layer.values = torch.where(keep, layer.values, torch.zeros((), dtype=layer.values.dtype, device=self.device))
        repeats = [h.request.n for _, h in group]
        logits = out.logits[:, -1, :]
        if any(n > 1 for n in repeats):
            idx = torch.repeat_interleave(torch.arange(len(group), device=self.device), torch.tensor(repeats, device=self.device))
            for layer in cache.layers:
                layer.keys = layer.keys.index_select(0, idx)
                layer.values = layer.values.index_select(0, idx)
            mask = mask.index_select(0, idx)
            logits = logits.index_select(0, idx)
        rows = [row for prompt, handle in group for row in self._make_rows(handle, prompt)]
        self._merge(cache, mask, rows)
        self._apply(rows, logits)

    def _merge(self, cache: DynamicCache, mask: torch.Tensor, rows: list[_Row]) -> None:
        """Append a prefilled group to the batch, left-padding the shorter side."""
        if not self._rows or self._cache is None or self._mask is None:
            self._cache, self._mask, self._rows = cache, mask, list(rows)
            return
        old_t, new_t = self._mask.shape[1], mask.shape[1]
        width = max(old_t, new_t)
        for old_layer, new_layer in zip(self._cache.layers, cache.layers):
            for attr in ("keys", "values"):
                a = getattr(old_layer, attr)
                b = getattr(new_layer, attr)
                a = F.pad(a, (0, 0, width - old_t, 0)) if width > old_t else a
                b = F.pad(b, (0, 0, width - new_t, 0)) if width > new_t else b
                setattr(old_layer, attr, torch.cat([a, b], dim=0))
        old_m = F.pad(self._mask, (width - old_t, 0)) if width > old_t else self._mask
        new_m = F.pad(mask, (width - new_t, 0)) if width > new_t else mask
        self._mask = torch.cat([old_m, new_m], dim=0)
        self._rows.extend(rows)

    def _drop(self, gone: Callable[[_Row], bool]) -> None:
        """Remove rows (finished or cancelled) and compact the cache."""
        keep = [i for i, row in enumerate(self._rows) if not gone(row)]
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._reset_batch()
            return
        assert self._cache is not None and self._mask is not None
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        mask = self._mask.index_select(0, idx)
        # Columns that are padding in every surviving row can go.
        start = int(torch.nonzero(mask.any(dim=0))[0].item())
        self._mask = mask[:, start:]
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, idx)[:, :, start:, :]
            layer.values = layer.values.index_select(0, idx)[:, :, start:, :]
        self._rows = [self._rows[i] for i in keep]

    def _decode(self) -> None:
        assert self._cache is not None and self._mask is not None
        rows = self._rows
        ids = torch.tensor([[r.state.generated[-1]] for r in rows], dtype=torch.long, device=self.device)
        pos = torch.tensor([[r.next_position] for r in rows], dtype=torch.long, device=self.device)
        mask = F.pad(self._mask, (0, 1), value=1)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=self._cache, use_cache=True, logits_to_keep=1)
        self._mask = mask
        for r in rows:
            r.next_position += 1
        self._apply(rows, out.logits[:, -1, :])

    def _apply(self, rows: list[_Row], logits: torch.Tensor) -> None:
        """Sample one token per row and turn it into deltas."""
        result = sample_step(logits, [r.state for r in rows], self.vocab_size)
        for row, token, lp in zip(rows, result.tokens, result.logprobs):
            self._advance(row, token, lp)

    def _advance(self, row: _Row, token: int, lp: tuple[float, list[tuple[int, float]]] | None) -> None:
        """One sampled token: its text (UTF-8 completed, stop strings held back or cut),
        and whether it ends the sequence. An EOS or stop token counts as a token of the
        sequence (token_ids, logprobs: usage counts it, as vLLM does) but adds its text
        only with ``include_stop_str_in_output``."""
        st = row.state
        p = st.params
        st.generated.append(token)
        ends = len(st.generated) > p.min_tokens and token in st.ending_ids
        grammar_done = False  # the grammar cannot go on: the sequence ends after this token
        if st.constraint is not None:
            # The mask allows EOS only where the grammar can end, and there it ends the
            # sequence even with ignore_eos (nothing else could follow).
            ends = (token in self.eos_ids and st.constraint.can_end()) or (ends and token in p.stop_token_ids)
            if not ends:
                if not st.constraint.advance(token):
                    log.warning("constrained row left its grammar: %s", st.constraint.error[:200])
                grammar_done = st.constraint.finished
        if ends:
            text = (row.detok.add(token) if p.include_stop_str_in_output else "") + row.detok.flush()
        else:
            text = row.detok.add(token)
        logprobs = (self._token_logprob(token, lp[0], lp[1], text),) if lp is not None else ()
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

    def _token_logprob(self, token: int, logprob: float, top: list[tuple[int, float]], text: str) -> TokenLogprob:
        t = self.table
        return TokenLogprob(
            token=t.token_text(token),
            token_id=token,
            logprob=logprob,
            bytes=tuple(t.token_bytes(token)),
            top=tuple(TopLogprob(token=t.token_text(i), token_id=i, logprob=v, bytes=tuple(t.token_bytes(i))) for i, v in top),
            text=text,
        )

    def _collect_pending(self) -> list[tuple[RequestHandle, list[SequenceDelta]]]:
        """Group this step's deltas per request: one thread-safe hand-off per request per step."""
        by_handle: dict[int, tuple[RequestHandle, list[SequenceDelta]]] = {}
        for row in self._rows:
            if row.pending:
                entry = by_handle.setdefault(id(row.handle), (row.handle, []))
                entry[1].extend(row.pending)
                row.pending = []
        return list(by_handle.values())
