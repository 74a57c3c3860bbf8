"""The text-generation face of a loaded causal LM: tokenisation, chat templates,
grammar compilation for constrained decoding, ``generate`` (an async generator over
the shared batching scheduler) and prompt scoring for ``echo`` + ``logprobs`` (a
request of that scheduler too)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import torch

from .constraints import ConstraintCompiler, Grammar, GrammarLimits, GrammarSpec
from .detokenize import IncrementalDetokenizer, TokenTable
from .errors import InvalidInput, check_vocabulary
from .kvcache import KVPool, pool_shape_of
from .loading import weight_format
from .paged_attention import check_supported, register
from .quant import activation_dtype
from .scheduler import Scheduler, SchedulerLimits
from .threads import run_in_fresh_thread
from .types import GenerationRequest, ModelSpec, SamplingParams, SequenceDelta, TokenLogprob
from .window import generation_window


def eos_ids_of(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """Every id that should end a sequence: generation config, model config, tokenizer."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None), tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if value is None:
            continue
        for v in value if isinstance(value, (list, tuple, set)) else [value]:
            if v is not None:
                ids.add(int(v))
    return tuple(sorted(ids))


class TextGenerator:
    """One loaded generation model. Thread-safe; ``generate`` may be called from any
    event loop (each request is answered on the loop that submitted it)."""

    def __init__(
        self,
        spec: ModelSpec,
        model: Any,
        tokenizer: Any,
        device: torch.device,
        *,
        default_context_tokens: int = 2048,
        limits: SchedulerLimits,
        kv_cache_bytes: int,
        kv_block_size: int = 16,
        grammar_limits: GrammarLimits | None = None,
    ) -> None:
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        config = model.config
        window = generation_window(config.to_dict(), getattr(tokenizer, "model_max_length", None),
                                   default_context_tokens)
        self.context_length: int = int(spec.max_context_tokens or window)
        embed_rows = model.get_input_embeddings().weight.shape[0]
        self.vocab_size: int = len(tokenizer)
        self._id_limit = min(self.vocab_size, int(embed_rows))
        self._chat_template: str | None = spec.chat_template or getattr(tokenizer, "chat_template", None)
        self.has_chat_template: bool = bool(self._chat_template)
        self.table = TokenTable(tokenizer)
        self.eos_ids = eos_ids_of(model, tokenizer)
        self.dtype = next(model.parameters()).dtype
        self.constraints = ConstraintCompiler(
            tokenizer, vocab_size=self.vocab_size, eos_ids=self.eos_ids, limits=grammar_limits
        )
        self.weight_format: str = weight_format(model)  # 'int8', 'int4', 'float32', ...
        check_supported(model, spec.id)
        model.set_attn_implementation(register())
        self.pool = self._make_pool(config, limits.max_batch_size, kv_cache_bytes, kv_block_size)
        self._scheduler = Scheduler(
            model,
            self.table,
            self.pool,
            vocab_size=self._id_limit,
            context_length=self.context_length,
            eos_ids=self.eos_ids,
            device=device,
            limits=limits,
            bos_id=getattr(tokenizer, "bos_token_id", None),
            name=spec.id,
        )

    def _make_pool(self, config: Any, rows: int, budget_bytes: int, block_size: int) -> KVPool:
        """The KV pool within ``budget_bytes``, never larger than ``rows`` full windows
        (more could never be used). If the budget holds less than one window, the
        context length served shrinks to what the pool holds, so an admitted request
        always fits."""
        # Keys and values come out of the layers in the activation dtype (float32 also
        # when the linears are int8/int4 and the token table float16).
        shape = pool_shape_of(config, activation_dtype(self.model))
        tokens = min(max(budget_bytes, 0) // shape.bytes_per_token, rows * self.context_length)
        num_blocks = max(tokens // block_size, 2)
        if num_blocks * block_size < self.context_length:
            self.context_length = num_blocks * block_size
        return KVPool(shape, num_blocks=num_blocks, block_size=block_size, device=self.device)

    # ------------------------------------------------------------------ tokenisation
    def encode(self, text: str) -> list[int]:
        """Plain completion prompt: whatever specials the tokenizer adds by default."""
        return list(self.tokenizer.encode(text))

    @property
    def template_takes_tools(self) -> bool:
        """Whether the chat template renders a ``tools`` list itself."""
        return bool(self._chat_template) and "tools" in self._chat_template

    def render_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
        *, add_generation_prompt: bool = True,
    ) -> list[int]:
        """Apply the chat template (spec override first) with a generation prompt (unless
        ``add_generation_prompt`` is off, for /tokenize), and ``tools`` (OpenAI's tool
        objects) when given.

        The template is rendered to text and then encoded *without* added special
        tokens, because templates write their own BOS/markers."""
        if not self._chat_template:
            raise InvalidInput(f"model {self.spec.id!r} has no chat template", param="messages")
        try:
            text = self.tokenizer.apply_chat_template(
                messages, chat_template=self._chat_template, add_generation_prompt=add_generation_prompt,
                tokenize=False,
                **({"tools": tools} if tools else {}),
            )
        except Exception as exc:  # jinja errors (e.g. a template rejecting a role)
            raise InvalidInput(f"the chat template cannot render these messages: {exc}", param="messages") from exc
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def token_text(self, token_id: int) -> str:
        return self.table.token_text(token_id)

    def token_pieces(self, token_ids: Sequence[int], *, skip_special_tokens: bool = True) -> list[str]:
        """What each token adds to the text, decoded incrementally as generation does:
        "" for the first bytes of a character (the token completing it gets it whole),
        and for special tokens unless ``skip_special_tokens`` is off. The pieces join to
        the decoded text (for ``echo``: its text and its tokens' ``text_offset``)."""
        detok = IncrementalDetokenizer(self.table, skip_special_tokens=skip_special_tokens)
        pieces = [detok.add(int(t)) for t in token_ids]
        if pieces:
            pieces[-1] += detok.flush()
        return pieces

    async def compile_grammar(self, spec: GrammarSpec, *, timeout_s: float) -> Grammar:
        """Compile (or find in the cache) a grammar for ``GenerationRequest.grammar``, on a
        thread of its own so the event loop and the decode thread never wait for it.
        Raises InvalidInput naming ``spec.param`` for a grammar that does not compile or
        takes longer than ``timeout_s`` (the tokenizer data built on the model's first
        constrained request is not counted)."""
        if self.constraints.cached(spec):
            return self.constraints.compile(spec, timeout_s=timeout_s)
        return await run_in_fresh_thread(self.constraints.compile, spec, timeout_s=timeout_s)

    # -------------------------------------------------------------------- generation
    async def generate(self, request: GenerationRequest) -> AsyncIterator[SequenceDelta]:
        """Stream deltas for the request's ``n`` sequences as they are decoded.

        Raises InvalidInput / EngineOverloaded on the first ``__anext__`` before anything
        is yielded. Each sequence ends with exactly one delta whose ``finish_reason`` is
        "stop" (an EOS id or a stop string) or "length". Deltas carry the token sampled
        at that step (``text`` may be "" while characters are incomplete or held back
        for a possible stop string). The EOS or stop token that ends a sequence is
        reported as its last token (counted, as vLLM counts it) but adds no text unless
        ``include_stop_str_in_output``.
        Closing the generator (``aclose()``, task cancellation) cancels the request: its
        rows leave the batch at the next decode step. (A bare ``break`` out of ``async
        for`` only cancels once the generator is garbage-collected: call ``aclose()``.)

        Logprobs (``sampling.logprobs = k``): one TokenLogprob per reported token with
        the k most likely alternatives. They are the log-softmax of the model's logits
        after repetition/presence/frequency penalties, logit_bias and the min_tokens EOS
        mask, but *before* temperature, top-k, top-p and min-p - the vLLM/OpenAI
        convention, so they describe the model rather than the truncated sampler.
        With ``request.grammar`` they are taken *after* the grammar mask: the
        alternatives are tokens the grammar allows, and probabilities are renormalised
        over them.

        Prompt logprobs (``sampling.prompt_logprobs = k``, for ``echo``): computed while
        the prompt is read, from the model's raw logits, and carried by the first delta
        of sequence 0; with ``max_tokens`` 0 that is its finishing delta.
        """
        loop = asyncio.get_running_loop()
        handle = self._scheduler.submit(request, loop)
        remaining = request.n
        try:
            while remaining:
                item = await handle.queue.get()
                if isinstance(item, BaseException):
                    raise item
                for delta in item:
                    if delta.finish_reason is not None:
                        remaining -= 1
                    yield delta
        finally:
            handle.cancel()

    async def score_prompt(self, token_ids: Sequence[int], top: int) -> list[TokenLogprob | None]:
        """Logprobs of each prompt token given the ones before it, with the ``top`` most
        likely alternatives (for ``echo``); the first entry is None. The prompt is read
        by the scheduler as a request of its own (chunked prefill, the shared budget
        and pool), so other streams keep flowing while a long prompt is scored."""
        ids = [int(t) for t in token_ids]
        if len(ids) <= 1:
            check_vocabulary(ids, self._id_limit)
            return [None] * len(ids)
        request = GenerationRequest(
            request_id="score", prompt_token_ids=tuple(ids),
            sampling=SamplingParams(max_tokens=0, prompt_logprobs=max(0, min(int(top), 20))),
        )
        stream = self.generate(request)
        try:
            async for delta in stream:
                if delta.prompt_logprobs:
                    return list(delta.prompt_logprobs)
        finally:
            await stream.aclose()
        raise RuntimeError("the scheduler ended a scoring request without its logprobs")

    def stats(self) -> dict:
        return self._scheduler.stats() | self.constraints.stats()

    def check_total(self, sequences: int) -> None:
        """InvalidInput if a request's sequences (prompts x n) could never all be queued."""
        self._scheduler.check_total(sequences)

    def close(self) -> None:
        """Stop the worker; requests still in flight get ModelUnavailable."""
        self._scheduler.shutdown()
