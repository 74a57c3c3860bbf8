"""Attention over the engine's KV pool, registered with transformers' AttentionInterface.

The scheduler runs one forward per step over a *flattened* batch: every row's new
tokens (one for a decoding row, a chunk for a prefilling row) laid end to end as a
single ``[1, tokens]`` sequence with each token's real position id, so the linear
layers see no padding at all. A :class:`StepPlan` says which tokens belong to which
row and where their keys and values go in the pool. The attention function, called
by each layer with the layer's freshly projected (and rotated) keys and values:

1. writes them into the pool slots of their rows (``index_copy_``, in place);
2. reads each row's keys and values where they are: a row whose blocks are consecutive
   (the usual case: a prompt's blocks are handed out together, in order) is a plain
   view of the pool, with no copy at all, however long; the blocks of the other rows
   are gathered block by block with one ``index_select`` per layer over all of them;
3. runs ``scaled_dot_product_attention`` per row on those views (as 4-D tensors, so
   torch takes its fused CPU kernel), the query heads of a KV group folded into the
   query length so grouped-query models need no repeated keys.

Each row's attention is computed alone, so its numbers do not depend on which other
rows share the step. Without a plan (e.g. prompt scoring) it is plain causal SDPA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

ATTENTION_NAME = "gpt3dev_paged"


@dataclass
class RowSpan:
    q_start: int  # first of this row's tokens in the flattened step
    q_len: int  # tokens of this row in this step
    in_pool: bool  # its keys are a view of the pool (consecutive blocks), else of the gather
    kv_start: int  # offset of this row's first key in the pool, or in the per-layer gather
    kv_len: int  # tokens held by this row after this step's writes
    mask: torch.Tensor | None  # [q_len, kv_len] bool when the chunk sits after cached tokens


@dataclass
class StepPlan:
    keys: torch.Tensor  # the pool, [layers, kv_heads, slots, head_dim]
    values: torch.Tensor
    block_size: int
    write_slots: torch.Tensor  # [tokens]: the slot of each new token
    gather_blocks: torch.Tensor | None  # the blocks of the rows not held in consecutive blocks
    rows: list[RowSpan]


def build_plan(keys: torch.Tensor, values: torch.Tensor, block_size: int,
               rows: list[tuple[list[int], int, int]]) -> StepPlan:
    """``rows``: per row (block table, tokens held before this step, new tokens)."""
    device = keys.device
    spans: list[RowSpan] = []
    write: list[torch.Tensor] = []
    gather: list[int] = []
    offsets = torch.arange(block_size, device=device)
    q_start = 0
    for blocks, held, new in rows:
        total = held + new
        used = blocks[: -(-total // block_size)]
        first = used[0]
        in_pool = used[-1] - first == len(used) - 1 and used == list(range(first, first + len(used)))
        if in_pool:
            write.append(torch.arange(first * block_size + held, first * block_size + total, device=device))
            kv_start = first * block_size
        else:  # the slots of the new tokens only, from the blocks they fall in
            start = held // block_size
            slots = (torch.tensor(used[start:], dtype=torch.long, device=device)[:, None] * block_size + offsets)
            write.append(slots.flatten()[held - start * block_size : total - start * block_size])
            kv_start = len(gather) * block_size
            gather.extend(used)
        mask = None
        if new > 1 and held > 0:
            q_pos = torch.arange(held, total, device=device)[:, None]
            mask = torch.arange(total, device=device)[None, :] <= q_pos
        spans.append(RowSpan(q_start, new, in_pool, kv_start, total, mask))
        q_start += new
    gather_blocks = torch.tensor(gather, dtype=torch.long, device=device) if gather else None
    return StepPlan(keys, values, block_size, torch.cat(write), gather_blocks, spans)


def paged_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, scaling: float | None = None,
                    dropout: float = 0.0, kv_plan: StepPlan | None = None, **kwargs: Any
                    ) -> tuple[torch.Tensor, None]:
    """The AttentionInterface function: query ``[1, heads, T, D]``, key/value ``[1,
    kv_heads, T, D]``; returns ``[1, T, heads, D]``."""
    if kv_plan is None:
        return _plain_causal(query, key, value, attention_mask, scaling)
    heads, tokens, dim = query.shape[1:]
    out = attend(kv_plan, module.layer_idx, query[0].transpose(0, 1), key[0].transpose(0, 1),
                 value[0].transpose(0, 1), scaling)
    return out.view(1, tokens, heads, dim), None


def attend(plan: StepPlan, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
           scaling: float | None) -> torch.Tensor:
    """One layer's attention over the pool: ``query`` ``[T, heads, D]`` and the new keys
    and values ``[T, kv_heads, D]`` of the step's tokens; returns ``[T, heads * D]``
    (the layout the output projection reads; the engine's own forward calls this
    directly, transformers' through :func:`paged_attention`)."""
    pool_k, pool_v = plan.keys[layer], plan.values[layer]
    pool_k.index_copy_(1, plan.write_slots, key.transpose(0, 1).to(pool_k.dtype))
    pool_v.index_copy_(1, plan.write_slots, value.transpose(0, 1).to(pool_v.dtype))
    heads, dim = query.shape[1], query.shape[2]
    kv_heads = pool_k.shape[0]
    group = heads // kv_heads
    k_gathered = v_gathered = None
    if plan.gather_blocks is not None:
        by_block = (kv_heads, -1, plan.block_size, dim)
        k_gathered = pool_k.view(by_block).index_select(1, plan.gather_blocks).view(kv_heads, -1, dim)
        v_gathered = pool_v.view(by_block).index_select(1, plan.gather_blocks).view(kv_heads, -1, dim)
    outs = []
    for span in plan.rows:
        k_src, v_src = (pool_k, pool_v) if span.in_pool else (k_gathered, v_gathered)
        k = k_src[None, :, span.kv_start : span.kv_start + span.kv_len]  # [1, kv_heads, L, D]
        v = v_src[None, :, span.kv_start : span.kv_start + span.kv_len]
        # 4-D inputs ([1, heads, L, D]) let SDPA take its fused CPU kernel; 3-D ones fall
        # back to the unfused path (twice the time for a masked chunk over a long context).
        if span.q_len == 1:
            # The group's query heads folded into the query length: [1, kv_heads, group, D],
            # so grouped-query models need no repeated keys.
            q = query[span.q_start].reshape(1, kv_heads, group, dim)
            o = F.scaled_dot_product_attention(q, k, v, scale=scaling)
            outs.append(o.reshape(1, heads * dim))
            continue
        q = query[span.q_start : span.q_start + span.q_len].transpose(0, 1)  # [heads, q, D]
        if span.mask is None:
            # A whole prompt at once: plain causal, per folded head group.
            o = F.scaled_dot_product_attention(q[None], _rep(k[0], group)[None], _rep(v[0], group)[None],
                                               is_causal=True, scale=scaling)
        else:
            q = q.reshape(1, kv_heads, group * span.q_len, dim)
            mask = span.mask.repeat(group, 1)[None, None]
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling)
        outs.append(o.reshape(heads, span.q_len, dim).transpose(0, 1).reshape(span.q_len, heads * dim))
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def _rep(x: torch.Tensor, group: int) -> torch.Tensor:
    """[kv_heads, L, D] -> [kv_heads*group, L, D] (a view-expand then a copy only if group > 1)."""
    if group == 1:
        return x
    kvh, length, dim = x.shape
    return x[:, None].expand(kvh, group, length, dim).reshape(kvh * group, length, dim)


def _plain_causal(query, key, value, attention_mask, scaling):
    group = query.shape[1] // key.shape[1]
    out = F.scaled_dot_product_attention(
        query, key.repeat_interleave(group, dim=1) if group > 1 else key,
        value.repeat_interleave(group, dim=1) if group > 1 else value,
        attn_mask=attention_mask, is_causal=attention_mask is None and query.shape[2] > 1, scale=scaling,
    )
    return out.transpose(1, 2).contiguous(), None


def check_supported(model: Any, name: str) -> None:
    """Refuse models the pool cannot serve: sliding-window or hybrid layers (their
    caches keep only a window, or no keys at all), and architectures whose attention
    does not go through transformers' AttentionInterface."""
    from .errors import ModelUnavailable

    config = model.config
    kinds = set(getattr(config, "layer_types", None) or ())
    if kinds - {"full_attention"}:
        raise ModelUnavailable(
            f"model {name!r} has {'/'.join(sorted(kinds - {'full_attention'}))} layers; this engine's KV pool "
            "serves full-attention layers only"
        )
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", True):
        raise ModelUnavailable(
            f"model {name!r} uses sliding-window attention ({window} tokens); this engine's KV pool serves "
            "full-attention layers only"
        )
    if not getattr(model, "_supports_attention_backend", False):
        raise ModelUnavailable(
            f"model {name!r} ({type(model).__name__}) does not route attention through transformers' "
            "AttentionInterface, which this engine's KV pool needs"
        )


def register() -> str:
    """Register the function with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, paged_attention)
    return ATTENTION_NAME
