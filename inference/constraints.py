"""Grammar-constrained decoding: a per-row token mask from a JSON schema, regex, choice
list or Lark grammar, on llguidance behind a small interface.

- :class:`GrammarSpec` says what the output must match (frozen; hashed for the cache).
- :class:`ConstraintCompiler` (one per loaded model) builds the tokenizer's token trie
  once, on first use, and compiles specs into :class:`Grammar` objects, cached by a hash
  of the spec and bounded in time. Compiling blocks: call it off the decode thread.
- :meth:`Grammar.matcher` gives a fresh :class:`RowMatcher` per sequence (a cheap copy
  of the compiled template).
- Each decode step the scheduler calls :func:`apply_masks` on the processed logits of
  the batch (rows without a matcher are untouched) and then
  :meth:`RowMatcher.advance` with each constrained row's sampled token.

End of sequence: llguidance puts the EOS ids into the mask only where the grammar can
end, so EOS is never sampled inside an unfinished JSON value. When the grammar cannot
be extended at all (:attr:`RowMatcher.finished`) the row ends without sampling EOS.

Why llguidance rather than xgrammar: both are fast enough (tokenizer data in about a
second, compiles in milliseconds, a mask in microseconds against a decode step's tens of
milliseconds; docs/benchmarks/engine-measurements.md). What decides it: llguidance
reports schema keywords it cannot enforce (``not``, unknown ``format``s, ...) as errors,
which become a 400; xgrammar 0.2.8 ignores them silently. llguidance also embeds JSON
schemas in Lark grammars (``%json``), which tool calls use, and needs no other package
(xgrammar pulls in triton and tvm-ffi).

Bounds (:class:`GrammarLimits`, one per model; docs/operations/limits.md lists them):
no grammar may take the process down, hold the CPUs for long, or slow the batch.

- Before compiling, the source's size and the depth the compiler will recurse to
  (:mod:`.grammar_checks`) are checked: a chain of 3,000 ``$ref``s or Lark rules
  would overflow a thread's stack inside llguidance (a SIGSEGV: every stream lost).
- Compiles run in a small pool of threads with 64 MB stacks and a bounded queue
  (:mod:`.compile_pool`; full: a 429). A compile cannot be interrupted, so one that
  passes the timeout runs on in its worker, and its key is refused at once, with the
  same 400, for ``refuse_s``; requests for a key being compiled wait for that compile
  rather than start another.
- Each row's mask has a CPU-time budget per step: an ambiguous grammar (``s: s s |
  "a"``) costs more each token, and a row past the
  budget ends its request with :attr:`RowMatcher.abort` instead of slowing every row.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .compile_pool import CompileJob, CompilePool
from .errors import EngineOverloaded, InvalidInput
from .grammar_checks import lark_depth, schema_depth
from .json_bounds import bounded

if TYPE_CHECKING:  # the web layer imports the grammar specs without loading torch
    import torch

log = logging.getLogger(__name__)

GrammarKind = Literal["json_schema", "regex", "choice", "lark"]

# How generated JSON is laid out: one line, the separators models write by habit.
# Flexible whitespace lets a small model emit newlines forever inside an object.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True)
class GrammarLimits:
    """Bounds on the work one grammar may cause; the defaults are the settings'."""

    max_bytes: int = 256 * 1024  # the source, UTF-8 (GRAMMAR_MAX_BYTES)
    max_depth: int = 2_500  # levels, as grammar_checks counts them (GRAMMAR_MAX_DEPTH)
    workers: int = 2  # compiles running at once, per model (GRAMMAR_COMPILE_WORKERS)
    queue: int = 16  # compiles waiting for a worker; more: a 429 (GRAMMAR_COMPILE_QUEUE)
    refuse_s: float = 600.0  # a grammar that timed out is refused this long (GRAMMAR_REFUSE_SECONDS)
    mask_budget_s: float = 0.05  # CPU one row's mask may take in a step; 0: none (GRAMMAR_MASK_BUDGET_MS)


_WHAT = {"json_schema": "schema", "regex": "regex", "choice": "choice list", "lark": "grammar"}


@dataclass(frozen=True)
class GrammarSpec:
    """What a sequence's output must match.

    ``source`` is the schema as JSON text (``json_schema``), a regex, a JSON list of
    strings (``choice``) or a Lark / GBNF grammar (``lark``). ``param`` is the request
    field an error names; it is not part of the grammar's identity.
    """

    kind: GrammarKind
    source: str
    param: str = "grammar"

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.kind}\0{self.source}".encode()).hexdigest()


def json_schema_spec(schema: dict[str, Any], *, param: str) -> GrammarSpec:
    """A spec for a JSON schema. Key order is kept: properties are generated in the
    order the schema lists them."""
    return GrammarSpec("json_schema", json.dumps(schema, ensure_ascii=False), param)


def lark_string(text: str) -> str:
    """``text`` as a Lark string literal."""
    return json.dumps(text, ensure_ascii=False)


def lark_json(schema: dict[str, Any]) -> str:
    """A ``%json`` item for a Lark grammar, laid out like every other JSON we generate."""
    return "%json " + json.dumps(_with_layout(schema), ensure_ascii=False)


def _with_layout(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as compiled: closed objects, numbers bounded to what a double carries
    (:mod:`.json_bounds`; a small model otherwise writes ``1.7187500000...`` until
    ``max_tokens``), and our layout."""
    guidance = dict(JSON_LAYOUT) | dict(schema.get("x-guidance") or {})
    return bounded(_closed(schema)) | {"x-guidance": guidance}


_DATA_KEYS = {"enum", "const", "default", "examples", "x-guidance"}
_SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}


def _closed(schema: Any) -> Any:
    """A copy in which objects that list ``properties`` and say nothing about others get
    no others (``additionalProperties: false``), as vLLM's xgrammar back-end does: a small
    model otherwise keeps inventing keys until ``max_tokens``. Every answer still
    validates against the original schema."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in _DATA_KEYS:
            out[key] = value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):  # name -> schema: never a schema itself
            out[key] = {name: _closed(sub) for name, sub in value.items()}
        else:
            out[key] = _closed(value)
    if isinstance(schema.get("properties"), dict) and not {
        "additionalProperties", "patternProperties", "unevaluatedProperties"
    } & schema.keys():
        out["additionalProperties"] = False
    return out


class _MaskCounter:
    """Rows a model's grammars ended for their mask's cost (written by its decode thread)."""

    def __init__(self) -> None:
        self.exceeded = 0


class Grammar:
    """A compiled grammar, shared by every sequence that uses it (read-only)."""

    def __init__(
        self, spec: GrammarSpec, template: Any, vocab_size: int, *,
        mask_budget_s: float = 0.0, counter: _MaskCounter | None = None,
    ) -> None:
        self.spec = spec
        self._template = template  # an llguidance LLMatcher in its initial state
        self.vocab_size = vocab_size
        self.mask_budget_s = mask_budget_s
        self._counter = counter

    def matcher(self) -> RowMatcher:
        return RowMatcher(
            self._template.deep_copy(), self.vocab_size,
            param=self.spec.param, mask_budget_s=self.mask_budget_s, counter=self._counter,
        )

    def for_spec(self, spec: GrammarSpec) -> Grammar:
        """The same compiled grammar for an equal spec whose errors name another field."""
        return Grammar(spec, self._template, self.vocab_size, mask_budget_s=self.mask_budget_s, counter=self._counter)


# llguidance's stop reasons for a grammar that outgrew its parser limits mid-way (an
# Earley row over max_items_in_row says "InternalError", with "...; max is 2000").
_TOO_COMPLEX = {"ParserTooComplex", "LexerTooComplex"}


class RowMatcher:
    """One sequence's position in its grammar."""

    def __init__(
        self, matcher: Any, vocab_size: int, *,
        param: str = "grammar", mask_budget_s: float = 0.0, counter: _MaskCounter | None = None,
    ) -> None:
        self._m = matcher
        self.vocab_size = vocab_size
        self._param = param
        self._budget = mask_budget_s
        self._counter = counter
        self._tokens = 0
        # Set when following the grammar costs too much: the request ends with this error
        # (the scheduler delivers it) rather than a quiet "length".
        self.abort: InvalidInput | None = None

    def fill_mask(self, bitmask: np.ndarray, row: int) -> None:
        """Write the allowed-token bits into ``bitmask[row]`` (int32, C-contiguous).

        Timed in this thread's CPU time (llguidance computes on the calling thread), so
        a busy machine does not make an honest grammar look slow."""
        view = bitmask[row]
        start = time.thread_time()
        self._m.unsafe_compute_mask_ptr(view.ctypes.data, view.nbytes)
        spent = time.thread_time() - start
        if self._budget and spent > self._budget and self.abort is None:
            self._fail(
                f"the grammar is too ambiguous to follow: the tokens allowed after {self._tokens} generated "
                f"tokens took {spent * 1000:.1f} ms to compute, over the limit of {self._budget * 1000:g} ms a "
                "token; make it unambiguous (e.g. left-recursive lists, no rule that can split the same text "
                "two ways)"
            )

    def advance(self, token: int) -> bool:
        """Consume the sampled token; False when the grammar refuses it (an error state)
        or the row was ended for its cost (:attr:`abort`)."""
        if self.abort is not None:
            return False
        self._tokens += 1
        ok = bool(self._m.consume_token(int(token)))
        if not ok:
            error = self._m.get_error()
            if self._m.stop_reason() in _TOO_COMPLEX or "; max is " in error:
                first = (error.strip().splitlines() or ["parser limit reached"])[0]
                self._fail(f"the grammar is too complex to follow after {self._tokens} tokens: {first[:300]}")
        return ok

    def can_end(self) -> bool:
        return self.abort is None and bool(self._m.is_accepting())

    @property
    def finished(self) -> bool:
        """Nothing but the end can follow (or the matcher failed: see :attr:`error`)."""
        return self.abort is not None or bool(self._m.is_stopped())

    @property
    def error(self) -> str:
        if self.abort is not None:
            return str(self.abort)
        return self._m.get_error() if self._m.is_error() else ""

    def _fail(self, message: str) -> None:
        self.abort = InvalidInput(message, param=self._param)
        if self._counter is not None:
            self._counter.exceeded += 1
        log.warning("constrained row ended: %s", message)


def mask_words(vocab_size: int) -> int:
    return (vocab_size + 31) // 32


def apply_masks(logits: torch.Tensor, matchers: Sequence[RowMatcher | None]) -> None:
    """Set the logits of tokens each constrained row's grammar forbids to -inf, in place.

    Rows whose matcher is None are not touched. A row that the mask would leave with no
    finite logit (``min_tokens`` hid the only token the grammar allows, EOS) gets the
    grammar's choices at equal odds, so sampling never sees an empty row. The bits are
    unpacked with numpy and applied with one ``masked_fill``: few torch operations per
    step, since each one can wait for every intra-op thread on a busy CPU.
    """
    import torch  # here, not at import: see the TYPE_CHECKING import above

    rows = [i for i, m in enumerate(matchers) if m is not None]
    if not rows:
        return
    vocab = matchers[rows[0]].vocab_size  # type: ignore[union-attr]
    bitmask = np.zeros((len(rows), mask_words(vocab)), dtype=np.int32)
    for j, i in enumerate(rows):
        matchers[i].fill_mask(bitmask, j)  # type: ignore[union-attr]
    # Token t is bit t % 32 of word t // 32: little-endian bytes, little bit order.
    allowed = np.unpackbits(bitmask.view(np.uint8), axis=1, count=vocab, bitorder="little").view(bool)
    width = logits.shape[-1]
    forbid = np.ones((len(rows), width), dtype=bool)
    forbid[:, : min(width, vocab)] = ~allowed[:, :width]
    forbid_t = torch.from_numpy(forbid).to(logits.device)
    every = len(rows) == logits.shape[0]
    idx = None if every else torch.tensor(rows, dtype=torch.long, device=logits.device)
    sub = logits if idx is None else logits.index_select(0, idx)
    sub.masked_fill_(forbid_t, float("-inf"))
    empty = sub.amax(dim=-1) == float("-inf")
    if bool(empty.any()):
        sub[empty] = torch.where(forbid_t[empty], float("-inf"), 0.0)
    if idx is not None:
        logits.index_copy_(0, idx, sub)


class ConstraintCompiler:
    """Compiles :class:`GrammarSpec` objects for one tokenizer; thread-safe.

    ``compile`` blocks (it waits for llguidance, which releases the GIL while it
    builds): call it from a request's thread, never on the decode thread.
    """

    def __init__(
        self, tokenizer: Any, *, vocab_size: int, eos_ids: Sequence[int], cache_size: int = 256,
        limits: GrammarLimits | None = None,
    ) -> None:
        self._hf_tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._eos_ids = [int(e) for e in eos_ids]
        self._cache_size = cache_size
        self.limits = limits or GrammarLimits()
        self._cache: collections.OrderedDict[str, Grammar | InvalidInput] = collections.OrderedDict()
        # Keys whose compile passed the timeout: (refused until, the 400's message).
        self._refused: collections.OrderedDict[str, tuple[float, str]] = collections.OrderedDict()
        self._inflight: dict[str, CompileJob] = {}  # one compile per key at a time
        self._pool = CompilePool(workers=self.limits.workers, queue=self.limits.queue)
        self._counts = collections.Counter[str]()
        self._masks = _MaskCounter()
        self._lock = threading.Lock()
        self._tokenizer_lock = threading.Lock()
        self._ll_tokenizer: Any = None

    def tokenizer_info(self) -> Any:
        """The llguidance tokenizer (token trie), built once per model on first use."""
        with self._tokenizer_lock:
            if self._ll_tokenizer is None:
                import llguidance.hf

                self._ll_tokenizer = llguidance.hf.from_tokenizer(
                    self._hf_tokenizer, n_vocab=self.vocab_size, eos_token=self._eos_ids or None
                )
            return self._ll_tokenizer

    def cached(self, spec: GrammarSpec) -> bool:
        """Whether ``compile`` answers at once: compiled, refused, or known not to compile."""
        with self._lock:
            return spec.key in self._cache or spec.key in self._refused

    def stats(self) -> dict[str, int | float]:
        """Counters since load (compiles, their seconds, timeouts, refusals) and the pool now."""
        with self._lock:
            counts = dict(self._counts)
        return {
            "grammar_compiles": counts.get("compiles", 0),
            "grammar_compile_seconds": round(counts.get("compile_ms", 0) / 1000, 3),
            "grammar_compile_timeouts": counts.get("timeouts", 0),
            "grammar_refused": counts.get("refused", 0),
            "grammar_over_limits": counts.get("over_limits", 0),
            "grammar_compile_busy": counts.get("busy", 0),
            "grammar_compile_running": self._pool.running,
            "grammar_compile_waiting": self._pool.waiting,
            "grammar_mask_budget_exceeded": self._masks.exceeded,
        }

    def compile(self, spec: GrammarSpec, *, timeout_s: float) -> Grammar:
        """The compiled grammar for ``spec``; InvalidInput (naming ``spec.param``) when it
        does not compile, is over a limit, takes longer than ``timeout_s`` (and then for
        ``limits.refuse_s`` more at once); EngineOverloaded when no compile worker was
        free for ``timeout_s``."""
        hit = self._known(spec)
        if hit is None:
            hit = self._compile_new(spec, timeout_s)
        if isinstance(hit, InvalidInput):
            raise InvalidInput(str(hit), param=spec.param)
        return hit if hit.spec == spec else hit.for_spec(spec)

    def _known(self, spec: GrammarSpec) -> Grammar | InvalidInput | None:
        key = spec.key
        with self._lock:
            refusal = self._refused.get(key)
            if refusal is not None:
                until, message = refusal
                if time.monotonic() < until:
                    self._counts["refused"] += 1
                    raise InvalidInput(message, param=spec.param)
                del self._refused[key]
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
            return hit

    def _compile_new(self, spec: GrammarSpec, timeout_s: float) -> Grammar | InvalidInput:
        key = spec.key
        with self._lock:
            job = self._inflight.get(key)
            if job is not None:
                job.waiters += 1
        if job is None:
            prepared = self._prepare(spec)  # the cheap checks, on this thread
            if isinstance(prepared, InvalidInput):
                with self._lock:
                    self._counts["over_limits"] += 1
                    self._store(key, prepared)
                return prepared
            tokenizer = self.tokenizer_info()  # once per model; not part of the grammar's time
            with self._lock:
                job = self._inflight.get(key)
                if job is not None:
                    job.waiters += 1
                else:
                    try:
                        job = self._pool.submit(lambda: self._run(key, spec, prepared, tokenizer))
                    except EngineOverloaded:
                        self._counts["busy"] += 1
                        raise
                    self._inflight[key] = job
        return self._wait(key, spec, job, timeout_s)

    def _wait(self, key: str, spec: GrammarSpec, job: CompileJob, timeout_s: float) -> Grammar | InvalidInput:
        # Waiting for a worker is bounded like compiling (at least a second, so that a
        # thread starting is never "busy"); then the 429 says to come back later.
        if not job.started.wait(max(timeout_s, 1.0)):
            with self._lock:
                job.waiters -= 1
                if job.waiters == 0 and self._pool.withdraw(job):
                    self._inflight.pop(key, None)
                if not job.started.is_set():
                    self._counts["busy"] += 1
                    raise EngineOverloaded(
                        f"grammar compilation is busy: no compile worker was free for {max(timeout_s, 1.0):g} s; "
                        "retry later",
                        retry_after=max(timeout_s, 1.0),
                    )
                job.waiters += 1  # a worker took it just now: wait for it like the others
        # The timeout counts from when a worker took the job: time in the queue is not
        # the grammar's fault.
        if not job.done.wait(max(job.started_at + timeout_s - time.monotonic(), 0.0)):
            with self._lock:
                if not job.done.is_set():
                    message = (
                        f"the {_WHAT[spec.kind]} took longer than {timeout_s:g} s to compile; simplify it"
                    )
                    if key not in self._refused:
                        self._counts["timeouts"] += 1
                        log.warning("grammar compile passed %g s (%s %s...); refusing it for %g s",
                                    timeout_s, spec.kind, key[:12], self.limits.refuse_s)
                    if self.limits.refuse_s > 0:
                        self._refused[key] = (time.monotonic() + self.limits.refuse_s, message)
                        while len(self._refused) > 4096:
                            self._refused.popitem(last=False)
                    self._cache.pop(key, None)
                    raise InvalidInput(message, param=spec.param)
        return job.result

    def _run(self, key: str, spec: GrammarSpec, grammar: str, tokenizer: Any) -> Grammar | InvalidInput:
        """On a compile worker: build, then cache the outcome (unless it came too late)."""
        start = time.monotonic()
        try:
            result: Grammar | InvalidInput = self._build(spec, grammar, tokenizer)
        except InvalidInput as exc:
            result = exc
        except Exception as exc:  # noqa: BLE001 - any library failure is a bad grammar
            result = InvalidInput(f"the grammar cannot be compiled: {exc}", param=spec.param)
        with self._lock:
            self._counts["compiles"] += 1
            self._counts["compile_ms"] += round((time.monotonic() - start) * 1000)
            self._inflight.pop(key, None)
            if key not in self._refused:
                self._store(key, result)
        return result

    def _store(self, key: str, value: Grammar | InvalidInput) -> None:
        self._cache[key] = value
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _prepare(self, spec: GrammarSpec) -> str | InvalidInput:
        """llguidance's grammar text for ``spec``, after the static checks (size, depth:
        see :mod:`.grammar_checks`); or the 400 it deserves."""
        import llguidance

        what, limits = _WHAT[spec.kind], self.limits
        size = len(spec.source.encode())
        if size > limits.max_bytes:
            return InvalidInput(f"the {what} is {size:,} bytes; the limit is {limits.max_bytes:,}", param=spec.param)
        try:
            if spec.kind == "json_schema":
                try:
                    schema = json.loads(spec.source)
                except ValueError as exc:
                    return InvalidInput(f"the schema is not valid JSON: {exc}", param=spec.param)
                if not isinstance(schema, (dict, bool)):
                    return InvalidInput("the schema must be a JSON object", param=spec.param)
                depth = schema_depth(schema)
                if depth > limits.max_depth:
                    return InvalidInput(
                        f"the schema is {depth:,} levels deep (objects and arrays, each $ref followed); "
                        f"the limit is {limits.max_depth:,}", param=spec.param,
                    )
                if isinstance(schema, dict):
                    schema = _with_layout(schema)
                return llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema, ensure_ascii=False))
            if spec.kind == "regex":
                return llguidance.LLMatcher.grammar_from_regex(spec.source)
            if spec.kind == "choice":
                choices = json.loads(spec.source)
                return llguidance.LLMatcher.grammar_from_lark("start: " + " | ".join(lark_string(c) for c in choices))
            from llguidance.gbnf_to_lark import any_to_lark

            try:
                lark = any_to_lark(spec.source)
            except Exception as exc:  # noqa: BLE001 - a GBNF syntax error
                return InvalidInput(f"the grammar does not parse: {exc}", param=spec.param)
            depth = lark_depth(lark)
            if depth > limits.max_depth:
                return InvalidInput(
                    f"the grammar's rules refer to each other {depth:,} levels deep (each rule, group and %json "
                    f"level); the limit is {limits.max_depth:,}", param=spec.param,
                )
            return llguidance.LLMatcher.grammar_from_lark(lark)
        except RecursionError:
            return InvalidInput(f"the {what} is nested too deeply", param=spec.param)

    def _build(self, spec: GrammarSpec, grammar: str, tokenizer: Any) -> Grammar:
        import llguidance

        template = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if template.is_error():
            raise InvalidInput(_clean_error(spec, template.get_error()), param=spec.param)
        return Grammar(spec, template, self.vocab_size, mask_budget_s=self.limits.mask_budget_s, counter=self._masks)


def _clean_error(spec: GrammarSpec, message: str) -> str:
    """llguidance's message, first line only, phrased for the API."""
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    what = _WHAT[spec.kind]
    if "Unimplemented keys" in first or "Unknown format" in first or "nimplemented" in first:
        return f"this {what} uses a keyword constrained decoding cannot enforce: {first}"
    return f"the {what} cannot be compiled: {first}"
