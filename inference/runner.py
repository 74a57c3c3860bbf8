"""The engine's own forward for Llama-shaped decoders: the same math, less Python.

The scheduler's step used to go through transformers' ``model(...)``: per layer, three
decorated module calls, seven projections each casting their input, a rotary embedding
applied to queries and keys separately, and the attention interface's dispatch. At
batch 1 that Python and those small ops cost about as much as the matrix products of
SmolLM2 in int4. :class:`DecoderRunner` runs the same layers of the same loaded model
directly:

* queries, keys and values come out of one projection, and gate and up out of one
  (the weights are concatenated once at load and the original modules keep views of
  them, so no weight is held twice and transformers' own forward still works);
* the rotary embedding turns queries and keys in one go (elementwise, so the numbers
  are those of transformers' ``apply_rotary_pos_emb``);
* attention goes straight to :func:`inference.paged_attention.attend`, in the layout the
  projections give and take (no transposes to transformers' ``[1, heads, T, D]``);
* the LM head runs only over the positions whose logits are used, and not at all in a
  step where every row is still reading its prompt (except over the positions of a
  prompt being scored, see :func:`step_forward`);
* float32 weights are packed once for oneDNN (:mod:`inference.packed`): on the AMD
  machines this project runs on, about twice MKL's speed at decode batch sizes, and a
  row's numbers no longer depend on how many rows share the step.

float32 logits are bit-identical to transformers' forward over the engine's pool,
which calls the same packed weights through the modules it re-points (tested on the
bundled SmolLM2, alone and batched), and within float32 rounding of an unpacked copy.
Models of another shape (``q_norm``/``k_norm``, other activations, scaled embeddings)
keep transformers' forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .packed import PackedLinear, pack, pack_fused
from .paged_attention import StepPlan, attend, paged_attention
from .quant import Float16Embedding, Int4Linear, Int8Linear

# Causal LMs whose decoder layers are Llama's: pre-norm, q/k/v/o projections (Qwen2's
# with a bias), rotary embeddings from the model's ``rotary_emb``, a SiLU-gated MLP.
SUPPORTED = frozenset({"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"})


# torch's CPU int4 packing interleaves output rows in blocks of 64: only whole blocks can
# be concatenated (and sliced back) row-wise.
INT4_ROW_BLOCK = 64


def can_concat(modules: list[nn.Module]) -> bool:
    """Whether :func:`concat_linears` can join ``modules``: one kind, all with a bias or
    none, and whole int4 row blocks."""
    kinds = {type(m) for m in modules}
    if len(kinds) != 1 or not kinds <= {nn.Linear, Int8Linear, Int4Linear}:
        return False
    if len({m.bias is None for m in modules}) != 1:
        return False
    return Int4Linear not in kinds or all(m.out_features % INT4_ROW_BLOCK == 0 for m in modules)


def concat_linears(modules: list[nn.Module]) -> nn.Module | None:
    """One linear computing ``modules`` side by side (outputs concatenated), or None when
    :func:`can_concat` says no. The modules are re-pointed at views of the new weights,
    so memory is not doubled."""
    if not can_concat(modules):
        return None
    kind = type(modules[0])
    biases = [m.bias for m in modules]
    sizes = [int(m.out_features) for m in modules]
    bias = None if biases[0] is None else torch.cat([b.detach() for b in biases])
    if kind is nn.Linear:
        weight = torch.cat([m.weight.detach() for m in modules])
        fused: nn.Module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
        fused.weight = nn.Parameter(weight, requires_grad=False)
        if bias is not None:
            fused.bias = nn.Parameter(bias, requires_grad=False)
        for m, w, b in zip(modules, weight.split(sizes), _split(bias, sizes)):
            m.weight = nn.Parameter(w, requires_grad=False)
            if b is not None:
                m.bias = nn.Parameter(b, requires_grad=False)
        return fused
    if kind is Int8Linear:
        fused = Int8Linear.__new__(Int8Linear)
        nn.Module.__init__(fused)
        fused.out_features, fused.in_features = sum(sizes), modules[0].in_features
        fused.register_buffer("weight", torch.cat([m.weight for m in modules]))
        fused.register_buffer("scales", torch.cat([m.scales for m in modules]))
        fused.register_buffer("bias", bias)
        for m, w, s, b in zip(modules, fused.weight.split(sizes), fused.scales.split(sizes), _split(bias, sizes)):
            m.weight, m.scales, m.bias = w, s, b
        return fused
    if kind is Int4Linear:
        # In whole row blocks, packing a concatenation gives the concatenation of the
        # packings, so rows of the fused weight serve each module.
        fused = Int4Linear.__new__(Int4Linear)
        nn.Module.__init__(fused)
        fused.out_features, fused.in_features, fused.group = sum(sizes), modules[0].in_features, modules[0].group
        fused.register_buffer("weight", torch.cat([m.weight for m in modules]))
        fused.register_buffer("scales_and_zeros", torch.cat([m.scales_and_zeros for m in modules], dim=1))
        fused.register_buffer("bias", bias)
        for m, w, b in zip(modules, fused.weight.split(sizes), _split(bias, sizes)):
            # scales_and_zeros stay the module's own: their column slices are not
            # contiguous (about 0.3 MB a layer held twice for SmolLM2).
            m.weight, m.bias = w, b
        return fused
    raise AssertionError(kind)  # can_concat admits no other kind


def _split(t: torch.Tensor | None, sizes: list[int]) -> list[torch.Tensor | None]:
    return list(t.split(sizes)) if t is not None else [None] * len(sizes)


def _rows(linear: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``linear`` over ``[rows, in]``: a packed linear's own entry (no reshaping), else the module."""
    return linear.rows if isinstance(linear, PackedLinear) else linear


def _add_rows(linear: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(x, residual) -> residual + linear(x)``, in one op where the linear is packed."""
    if isinstance(linear, PackedLinear):
        return linear.add_rows
    return lambda x, residual: residual + linear(x)


class _Layer:
    __slots__ = ("norm1", "qkv", "o", "norm2", "gate_up", "down", "attn", "inter",
                 "qkv_rows", "gate_up_rows", "o_add", "down_add")

    def __init__(self, layer: nn.Module) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.norm1, self.norm2 = layer.input_layernorm, layer.post_attention_layernorm
        self.attn = attn  # paged_attention reads its layer_idx
        self.inter = mlp.gate_proj.out_features
        qkv = concat_linears([attn.q_proj, attn.k_proj, attn.v_proj])
        gate_up = concat_linears([mlp.gate_proj, mlp.up_proj])
        assert qkv is not None and gate_up is not None  # DecoderRunner.supports checked the kinds
        # float32: oneDNN-packed weights, shared with transformers' modules (see .packed).
        self.qkv = pack_fused(qkv, [(attn, "q_proj"), (attn, "k_proj"), (attn, "v_proj")])
        self.gate_up = pack_fused(gate_up, [(mlp, "gate_proj"), (mlp, "up_proj")])
        self.o = attn.o_proj = pack(attn.o_proj)
        self.down = mlp.down_proj = pack(mlp.down_proj)
        # What the runner calls, every x [rows, in]: qkv_rows(x), gate_up_rows(x), and
        # o_add(x, residual) = residual + o(x), down_add(x, residual) likewise.
        self.qkv_rows, self.gate_up_rows = _rows(self.qkv), _rows(self.gate_up)
        self.o_add, self.down_add = _add_rows(self.o), _add_rows(self.down)


class DecoderRunner:
    """Logits of a flattened step (see :mod:`inference.paged_attention`) for one model."""

    def __init__(self, model: nn.Module) -> None:
        base = model.model
        config = model.config
        self.embed = base.embed_tokens
        self.rotary = base.rotary_emb
        self.final_norm = base.norm
        # A float32 head is packed too; where it is tied to the token table, the table
        # stays for lookups, so that table is held twice (113 MB for SmolLM2).
        self.head = pack(model.lm_head)
        if self.head is not model.lm_head:
            model.set_output_embeddings(self.head)
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(getattr(config, "num_key_value_heads", None) or self.heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.heads)
        self.scaling = float(base.layers[0].self_attn.scaling)
        self.layers = [_Layer(layer) for layer in base.layers]

    @staticmethod
    def supports(model: nn.Module) -> bool:
        if type(model).__name__ not in SUPPORTED:
            return False
        config = model.config
        if getattr(config, "hidden_act", None) != "silu" or type(model.model.embed_tokens) not in (
            nn.Embedding, Float16Embedding
        ):
            return False
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            if hasattr(attn, "q_norm") or not all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")):
                return False
            if not (can_concat([attn.q_proj, attn.k_proj, attn.v_proj]) and can_concat([mlp.gate_proj, mlp.up_proj])):
                return False
        return True

    def __call__(self, ids: torch.Tensor, positions: torch.Tensor, plan: StepPlan | None,
                 keep: torch.Tensor | None) -> torch.Tensor | None:
        """``ids``/``positions``: ``[T]``; the logits ``[len(keep), vocab]`` of the
        positions in ``keep``, or None when ``keep`` is None (no row needs a token)."""
        h = self._layers(ids, positions, plan)
        if keep is None:
            return None
        return self.head(self.final_norm(h.index_select(0, keep)))

    def final_hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """The normed last hidden states ``[T, hidden]`` of one sequence read alone,
        outside the pool (plain causal attention): a reference for the pool's forward."""
        positions = torch.arange(ids.shape[0], device=ids.device)
        return self.final_norm(self._layers(ids, positions, None))

    def _layers(self, ids: torch.Tensor, positions: torch.Tensor, plan: StepPlan | None) -> torch.Tensor:
        h = self.embed(ids[None])  # [1, T, hidden], as transformers computes it
        cos, sin = self.rotary(h, positions[None])
        nq, nkv, dim = self.heads, self.kv_heads, self.head_dim
        half = dim // 2
        cos, sin = cos[0, :, None, :], sin[0, :, None, :]  # [T, 1, D]
        # Llama's rotate_half: (x1, x2) -> (-x2, x1), then q*cos + rotate_half(q)*sin. The
        # sign goes into sin, once a step: (x2, x1) * (-sin1, sin2) are the same products.
        sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
        h = h[0]
        tokens = h.shape[0]
        for layer in self.layers:
            x = layer.norm1(h)
            qkv = layer.qkv_rows(x).view(tokens, nq + 2 * nkv, dim)
            qk, v = qkv[:, : nq + nkv], qkv[:, nq + nkv :]
            turned = qk.unflatten(-1, (2, half)).flip(-2).flatten(-2)  # (x2, x1)
            qk = (qk * cos) + (turned * sin)
            if plan is None:  # plain causal attention, in the layout transformers hands it
                views = (part.transpose(0, 1)[None] for part in (qk[:, :nq], qk[:, nq:], v))
                out = paged_attention(layer.attn, *views, None, self.scaling)[0].reshape(tokens, nq * dim)
            else:
                out = attend(plan, layer.attn.layer_idx, qk[:, :nq], qk[:, nq:], v, self.scaling)
            h = layer.o_add(out, h)
            x = layer.norm2(h)
            gate, up = layer.gate_up_rows(x).split(layer.inter, dim=-1)
            h = layer.down_add(F.silu(gate) * up, h)
        return h


def runner_for(model: nn.Module) -> DecoderRunner | None:
    """The engine's forward for ``model``, or None where transformers' own must serve.
    One per model: building it rearranges the model's linears (fused, packed)."""
    runner = model.__dict__.get("_gpt3dev_runner")
    if runner is None and DecoderRunner.supports(model):
        runner = model.__dict__["_gpt3dev_runner"] = DecoderRunner(model)
    return runner


@dataclass
class StepOutput:
    """One step's results. ``logits``: ``[len(keep), vocab]``, the rows that sample next
    (None when none does). ``scored``: the final hidden states of the prompt positions
    being scored, ``[len(score), hidden]``, which ``head`` turns into logits piece by
    piece (so a chunk never holds ``chunk x vocab`` floats at once); where the model
    offers no separate head, ``head`` is None and ``scored`` are the logits already."""

    logits: torch.Tensor | None
    scored: torch.Tensor | None = None
    head: Callable[[torch.Tensor], torch.Tensor] | None = None


def step_logits(model: Any, runner: DecoderRunner | None, ids: list[int], positions: list[int],
                plan: StepPlan, keep: list[int], device: torch.device) -> torch.Tensor | None:
    """Logits ``[len(keep), vocab]`` of one scheduler step, or None if ``keep`` is empty."""
    return step_forward(model, runner, ids, positions, plan, keep, [], device).logits


def step_forward(model: Any, runner: DecoderRunner | None, ids: list[int], positions: list[int],
                 plan: StepPlan, keep: list[int], score: list[int], device: torch.device) -> StepOutput:
    """One scheduler step: logits at ``keep`` and, for prompt scoring, what gives the
    logits at ``score`` (indices into the flattened step; see :class:`StepOutput`)."""
    ids_t = torch.tensor(ids, dtype=torch.long, device=device)
    pos_t = torch.tensor(positions, dtype=torch.long, device=device)
    keep_t = torch.tensor(keep, dtype=torch.long, device=device) if keep else None
    score_t = torch.tensor(score, dtype=torch.long, device=device) if score else None
    if runner is not None:
        if score_t is None:
            return StepOutput(runner(ids_t, pos_t, plan, keep_t))
        h = runner._layers(ids_t, pos_t, plan)
        logits = runner.head(runner.final_norm(h.index_select(0, keep_t))) if keep_t is not None else None
        return StepOutput(logits, runner.final_norm(h.index_select(0, score_t)), runner.head)
    if score_t is None:
        out = model(input_ids=ids_t[None], position_ids=pos_t[None], kv_plan=plan, use_cache=False,
                    logits_to_keep=keep_t if keep_t is not None else 1)
        return StepOutput(out.logits[0] if keep_t is not None else None)
    head, base = model.get_output_embeddings(), getattr(model, "base_model", None)
    if head is None or base is None or base is model:
        # No separate decoder to call: the model's own logits at both sets of positions.
        both = torch.cat([keep_t, score_t]) if keep_t is not None else score_t
        out = model(input_ids=ids_t[None], position_ids=pos_t[None], kv_plan=plan, use_cache=False,
                    logits_to_keep=both).logits[0]
        return StepOutput(out[: len(keep)] if keep else None, out[len(keep) :])
    softcap = getattr(model.config, "final_logit_softcapping", None)

    def logits_of(hidden: torch.Tensor) -> torch.Tensor:
        logits = head(hidden)
        return torch.tanh(logits / softcap) * softcap if softcap else logits

    h = base(input_ids=ids_t[None], position_ids=pos_t[None], kv_plan=plan, use_cache=False).last_hidden_state[0]
    logits = logits_of(h.index_select(0, keep_t)) if keep_t is not None else None
    return StepOutput(logits, h.index_select(0, score_t), logits_of)
