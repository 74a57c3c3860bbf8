"""float32 linears on oneDNN's prepacked weights, for the engine's own forward.

torch's ``F.linear`` on CPU calls MKL's sgemm. On the AMD EPYC machines this project
runs on, MKL is slow for the few rows a decode step has, and its answer for a row
depends on how many rows share the call (one row takes a matrix-vector path that
rounds differently from the matrix-matrix one). oneDNN, which torch also ships, runs
the same float32 products on a weight reordered once into its blocked layout
(``torch.ops.mkldnn._reorder_linear_weight``, the form torch's compiler freezes
weights into), several times faster than MKL at a decode step's few rows (the
timings are in docs/benchmarks/engine-measurements.md). Each row's result is the same
whatever the number of rows (checked from 1
to 600 rows; a lone row is computed as two, see :meth:`PackedLinear.forward`); it
differs from MKL's by float32 rounding (about 1e-4 absolute).

:class:`PackedLinear` holds only the packed weight. :func:`pack_fused` packs a linear
that :func:`inference.runner.concat_linears` joined and points the model's original
modules (``q_proj``, ``k_proj``, ...) at slices of its output, so the unpacked weights
are freed and transformers' own forward still runs (on the same numbers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PackedLinear(nn.Module):
    """``F.linear`` over a oneDNN-packed float32 weight (``[out, in]`` before packing)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = (int(s) for s in weight.shape)
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None))
        self.register_buffer("bias", None if bias is None else bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows(x.reshape(-1, self.in_features)).reshape(*x.shape[:-1], self.out_features)

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """``F.linear`` of ``x`` ``[rows, in]`` (the engine's own forward calls this, with
        no reshaping around it)."""
        if x.shape[0] == 1:
            # One row: on AVX-512 machines oneDNN takes a kernel for a lone row whose
            # rounding differs from the one for two or more (seen on an Intel Xeon with a
            # 1536-wide input; not on AMD), so a greedy answer would depend on the batch.
            # Sent as two equal rows it gets the many-row kernel, at the cost of one row.
            # The pair is a stride-0 view, not a copy: on an Intel Xeon (AVX-512) about 10
            # microseconds less a call than repeat(2, 1), with the same numbers as a row of
            # a batch of 2 to 100 (checked for each of SmolLM2's and MiniLM's shapes).
            return torch.ops.mkldnn._linear_pointwise(x.expand(2, -1), self.packed, self.bias, "none", [], "")[:1]
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def add_rows(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``residual + F.linear(x)`` for ``[rows, in]`` and ``[rows, out]``, the sum done by
        oneDNN as part of the product: the same numbers as the two ops (float32 addition
        is commutative), one op and one intermediate fewer."""
        if x.shape[0] == 1:  # as in rows()
            pair = torch.ops.mkldnn._linear_pointwise.binary(x.expand(2, -1), residual.expand(2, -1), self.packed,
                                                               self.bias, "add")
            return pair[:1]
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.packed, self.bias, "add")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN-packed"


class LinearSlice(nn.Module):
    """Output columns ``[start, stop)`` of a shared linear: what a module that was fused
    into it computed. Only transformers' forward calls these (the runner calls the
    fused linear once), so each call computing the whole fused output is acceptable."""

    def __init__(self, fused: nn.Module, start: int, stop: int) -> None:
        super().__init__()
        self.fused = fused
        self.start, self.stop = start, stop
        self.out_features, self.in_features = stop - start, fused.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused(x)[..., self.start : self.stop].contiguous()


def packable(linear: nn.Module) -> bool:
    """A plain float32 CPU ``nn.Linear`` that this torch build's oneDNN packs and computes
    correctly (checked once on a small input against ``F.linear``)."""
    if type(linear) is not nn.Linear or linear.weight.dtype != torch.float32 or linear.weight.device.type != "cpu":
        return False
    return _onednn_works()


_works: bool | None = None


def _onednn_works() -> bool:
    global _works
    if _works is None:
        try:
            gen = torch.Generator().manual_seed(0)
            w, x, b = (torch.randn(*s, generator=gen) for s in ((96, 64), (3, 64), (96,)))
            got = PackedLinear(w, b)(x)
            _works = bool(torch.allclose(got, F.linear(x, w, b), rtol=1e-4, atol=1e-4))
        except (RuntimeError, AttributeError):  # no oneDNN, or an op this build lacks
            _works = False
    return _works


def pack(linear: nn.Module) -> nn.Module:
    """``linear`` as a :class:`PackedLinear` where :func:`packable`, else unchanged."""
    if not packable(linear):
        return linear
    return PackedLinear(linear.weight, linear.bias)


def pack_fused(fused: nn.Module, parts: list[tuple[nn.Module, str]]) -> nn.Module:
    """Pack ``fused`` (the concatenation of ``parts``' modules, in order) and replace each
    part, ``(parent, attribute)``, with a :class:`LinearSlice` of it. Unchanged where
    :func:`packable` says no."""
    packed = pack(fused)
    if packed is fused:
        return fused
    start = 0
    for parent, name in parts:
        size = int(getattr(parent, name).out_features)
        setattr(parent, name, LinearSlice(packed, start, start + size))
        start += size
    return packed
