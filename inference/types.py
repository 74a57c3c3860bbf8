"""Frozen dataclasses that cross the boundary between the web apps and the engine.

The web layer turns a registry row into a :class:`ModelSpec` and a validated request
into a :class:`GenerationRequest`; the engine answers with :class:`SequenceDelta`
events. Nothing here knows about Django or HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .constraints import Grammar

Task = Literal["text-generation", "embeddings", "rerank"]
SourceType = Literal["hub", "local", "package"]
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class ModelSpec:
    """Everything the engine needs to load and run one registry entry."""

    id: str
    task: Task
    source_type: SourceType
    # hub: "owner/repo"; local: an absolute folder or file path;
    # package: "python_package/relative/path/inside/it" (a folder or a file such as a .gguf)
    source: str
    revision: str | None = None
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | mps
    max_context_tokens: int | None = None  # None: the model config's own window
    trust_remote_code: bool = False
    chat_template: str | None = None  # a Jinja override of the tokenizer's template
    # embeddings only: token-id input arrives in this tiktoken encoding (e.g. "cl100k_base")
    input_token_encoding: str | None = None
    hf_token: str | None = None


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling, applied per row inside a shared batch."""

    max_tokens: int = 16
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # None: no logprobs; k >= 0: the chosen token's logprob plus the k most likely alternatives
    logprobs: int | None = None
    # The same for every prompt token given the ones before it (``echo``), computed by the
    # prompt's prefill chunks; they arrive on the first delta of sequence 0.
    prompt_logprobs: int | None = None
    min_tokens: int = 0
    ignore_eos: bool = False
    # vLLM's extensions: more ids that end a sequence like EOS; keep the stop (string or
    # token) in the text; False: special tokens add their text (e.g. "<|im_start|>") too.
    stop_token_ids: tuple[int, ...] = ()
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt, sampled ``n`` times; the ``n`` sequences share the prompt's prefill."""

    request_id: str
    prompt_token_ids: tuple[int, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    n: int = 1
    # Compiled by TextGenerator.compile_grammar: every sequence's output must match it.
    grammar: Grammar | None = field(default=None, compare=False)


@dataclass(frozen=True)
class TopLogprob:
    token: str
    token_id: int
    logprob: float
    bytes: tuple[int, ...]


@dataclass(frozen=True)
class TokenLogprob:
    """A generated (or prompt) token with its log-probability and the top alternatives.

    ``token`` is OpenAI's display form (``bytes:\\xe4\\xbd`` for part of a character);
    ``text`` is what the token added to the output: "" for a special token or for the
    first bytes of a character, the whole character for the token that completes it."""

    token: str
    token_id: int
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[TopLogprob, ...] = ()
    text: str = ""


@dataclass(frozen=True)
class SequenceDelta:
    """What one of the ``n`` sequences produced since its previous delta.

    ``text`` is safe to show: valid UTF-8, with stop-string holdback applied (text that
    could still turn into a stop string is released later or never). ``token_ids`` and
    ``logprobs`` are the tokens sampled since the previous delta (logprobs only when the
    request asked for them), the EOS or stop token that ended the sequence included (it
    counts as a completion token, as in vLLM, though it adds no text unless
    ``include_stop_str_in_output``). The last delta of a sequence has ``finish_reason`` set.
    """

    index: int
    text: str
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: FinishReason | None = None
    # On a sequence's first delta: prompt tokens whose KV came from the prefix cache.
    cached_tokens: int | None = None
    # With ``SamplingParams.prompt_logprobs``, on the first delta of sequence 0: one entry
    # per prompt token, the first None (nothing precedes it).
    prompt_logprobs: tuple[TokenLogprob | None, ...] = ()
