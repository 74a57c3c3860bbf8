"""Fewer small ops per decode step: module replacements with the same math.

At batch 1 a SmolLM2 step spends a large share of its time outside the matmuls, in many
small ops (docs/benchmarks/engine-measurements.md). Llama-style RMSNorm is six of them
(cast, square, mean, add, rsqrt, two multiplies); torch's ``F.rms_norm`` is one fused
CPU kernel that gives bit-identical float32 results (checked by
``tests/inference/test_fused.py`` on the bundled model).

Only modules are replaced, never the attention or its cache, so this works at every
batch size with whatever KV cache the scheduler keeps, and needs no ``torch.compile``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Norm classes whose forward is exactly Llama's: x * rsqrt(mean(x^2) + eps) * weight.
LLAMA_STYLE_NORMS = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"})


class FusedRMSNorm(nn.Module):
    """Llama's RMSNorm as one ``F.rms_norm`` call (float32 models only)."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.weight = norm.weight
        self.eps = float(norm.variance_epsilon)
        self.shape = (int(norm.weight.shape[0]),)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(hidden_states, self.shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.shape}, eps={self.eps}, fused"


def fuse_norms(model: nn.Module) -> int:
    """Replace the float32 Llama-style RMSNorms of ``model`` in place; returns how many."""
    replaced = 0
    for name, module in list(model.named_modules()):
        if type(module).__name__ not in LLAMA_STYLE_NORMS or module.weight.dtype != torch.float32:
            continue
        path, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(path) if path else model, leaf, FusedRMSNorm(module))
        replaced += 1
    return replaced
