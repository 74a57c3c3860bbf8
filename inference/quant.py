"""Weight-only int8 and int4 layers for CPU, and their cached conversion.

Schemes (the registry dtypes ``int8`` and ``int4``):

* ``int8``: every ``nn.Linear`` of the decoder stores int8 weights with one scale per
  output channel (symmetric, absmax / 127) and runs torch's ``_weight_int8pack_mm``.
* ``int4``: every decoder ``nn.Linear`` stores 4-bit weights in groups of 32 along the
  input dimension with a scale and a minimum per group (asymmetric) and runs
  ``_weight_int4pack_mm_for_cpu``. This is the layout of GGUF's Q4_1 blocks, so a model
  converted from a Q4_1 file (the bundled SmolLM2) gets back exactly its file's weights.

The token embedding table and the LM head (one table when tied) are kept in float16:
the head's matrix-vector product is the largest single read of a decode step (SmolLM2:
49,152 x 576), and float16 (with float32 accumulation) runs it several times faster
than float32 while its logits stay close enough to keep the greedy arg-max. An int8
head was refused: its kernel returns bfloat16 logits, too coarse to keep near-ties
apart (docs/engine/quantization.md has the measurements). The lookup widens float16
rows back to the compute dtype.

Activations: the kernels are fast only with bfloat16 input (float32 input takes a slow
path), so a quantized layer casts its input to bfloat16 and its output back to the
model's dtype. Everything else (norms, residual stream, attention, the KV cache) stays
in the compute dtype, float32, and the modules never see the cache.

Conversion happens once per model and scheme, into ``cache_dir/<key>.<scheme>``,
where the key is the GGUF conversion's own (``gguf-<sha256>``) or a digest of the
source folder's weight files; loading from there builds the model on the meta device
and assigns the stored tensors, so no float32 copy of the weights is ever made.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .progress import bar, phase

log = logging.getLogger(__name__)

QUANT_SCHEMES = ("int8", "int4")
INT4_GROUP = 32
# Bump when the stored layout changes so stale cache entries are rebuilt.
_FORMAT_VERSION = "2"
_MARKER = "gpt3dev-quantized.json"
_WEIGHTS = "model.safetensors"
_ACT = torch.bfloat16  # the dtype the CPU kernels are fast with


# --------------------------------------------------------------------------- kernels
def quantize_int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: ``weight ~= q * scale[:, None]``; returns (q, float32 scale)."""
    w = weight.detach().to(torch.float32)
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-10)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale


def quantize_int4_groups(weight: torch.Tensor, group: int = INT4_GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric int4 per group of ``group`` inputs: ``w ~= q * scale + minimum``, q in 0..15.

    Returns the codes two per byte (low nibble first, ``[N, K/2]`` uint8) and a float32
    ``[N, K/group, 2]`` tensor of (scale, minimum)."""
    w = weight.detach().to(torch.float32)
    rows, cols = w.shape
    g = w.reshape(rows, cols // group, group)
    low, high = g.amin(dim=-1), g.amax(dim=-1)
    scale = ((high - low) / 15.0).clamp(min=1e-10)
    q = torch.round((g - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.uint8).reshape(rows, cols)
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()
    return packed, torch.stack([scale, low], dim=-1)


def _unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    rows, half = packed.shape
    out = torch.empty(rows, half * 2, dtype=torch.int32)
    out[:, 0::2] = (packed & 0x0F).to(torch.int32)
    out[:, 1::2] = (packed >> 4).to(torch.int32)
    return out


def _matmul_out(x: torch.Tensor, y: torch.Tensor, features: int) -> torch.Tensor:
    return y.reshape(*x.shape[:-1], features).to(x.dtype)


class Int8Linear(nn.Module):
    """``y = x @ W.T (+ b)`` with int8 ``W`` and one bfloat16 scale per output channel."""

    def __init__(self, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)
        self.register_buffer("scales", scales.to(_ACT))
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(_ACT)
        y = _matmul_out(x, torch._weight_int8pack_mm(flat, self.weight, self.scales), self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per channel"


class Int4Linear(nn.Module):
    """``y = x @ W.T (+ b)`` with ``W`` in 4-bit groups (scale + minimum per group)."""

    def __init__(self, packed: torch.Tensor, scale_min: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features = packed.shape[0]
        self.in_features = packed.shape[1] * 2
        self.group = self.in_features // scale_min.shape[1]
        # The kernel's dequantisation is (q - 8) * scale + zero, so zero = minimum + 8 * scale.
        scale, low = scale_min[..., 0], scale_min[..., 1]
        zeros = torch.stack([scale, low + 8 * scale], dim=-1).transpose(0, 1).contiguous()
        self.register_buffer("weight", torch.ops.aten._convert_weight_to_int4pack_for_cpu(_unpack_nibbles(packed), 1))
        self.register_buffer("scales_and_zeros", zeros.to(_ACT))
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(_ACT)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.weight, self.group, self.scales_and_zeros)
        y = _matmul_out(x, y, self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 groups of {self.group}"


class Float16Embedding(nn.Module):
    """The token table in float16; rows come out in the compute dtype."""

    def __init__(self, weight: torch.Tensor, out_dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.out_dtype = out_dtype
        self.num_embeddings, self.embedding_dim = weight.shape

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.weight).to(self.out_dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, float16 table"


class Float16Head(nn.Module):
    """The LM head over a float16 table (float32 accumulation); logits in the compute dtype."""

    def __init__(self, weight: torch.Tensor, out_dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.out_dtype = out_dtype
        self.out_features, self.in_features = weight.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x.to(torch.float16), self.weight).to(self.out_dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, float16 table"


def float16_tables(model: nn.Module) -> bool:
    """Put the token table and the LM head of ``model`` in float16 (one table if they are
    tied); True if done. Models whose lookup or head is not a plain ``nn.Embedding`` /
    bias-free ``nn.Linear`` (scaled embeddings, soft-capped heads) are left alone."""
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    if type(embed) is not nn.Embedding or type(head) is not nn.Linear or head.bias is not None:
        return False
    dtype = embed.weight.dtype
    tied = head.weight is embed.weight
    table = embed.weight.detach().to(torch.float16).contiguous()
    model.set_input_embeddings(Float16Embedding(table, dtype))
    head_table = table if tied else head.weight.detach().to(torch.float16).contiguous()
    model.set_output_embeddings(Float16Head(head_table, dtype))
    return True


def activation_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the residual stream (and so of keys and values): what the lookup returns."""
    embed = model.get_input_embeddings()
    return getattr(embed, "out_dtype", None) or embed.weight.dtype


# ------------------------------------------------------------------- model surgery
def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, leaf = name.rpartition(".")
    return (model.get_submodule(path) if path else model), leaf


def quantizable_linears(model: nn.Module) -> list[str]:
    """Names of the decoder's ``nn.Linear`` modules (the LM head is handled with the embedding)."""
    head = model.get_output_embeddings()
    return [
        name for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module is not head
    ]


def quantize_state(model: nn.Module, scheme: str, progress: Any = None) -> dict[str, torch.Tensor]:
    """The tensors a quantized copy of ``model`` stores: packed weights and scales of every
    decoder linear, and every other parameter and buffer as it is (a tied head once)."""
    if scheme not in QUANT_SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}")
    linears = quantizable_linears(model)
    handled = {f"{name}.{p}" for name in linears for p in ("weight", "bias")}
    out: dict[str, torch.Tensor] = {}
    for name in linears:
        module = model.get_submodule(name)
        if scheme == "int4" and module.in_features % INT4_GROUP == 0:
            out[f"{name}.int4"], out[f"{name}.int4_scale_min"] = quantize_int4_groups(module.weight)
        else:
            out[f"{name}.int8"], out[f"{name}.int8_scale"] = quantize_int8_rows(module.weight)
        if module.bias is not None:
            out[f"{name}.bias"] = module.bias.detach().to(torch.float32).contiguous()
        if progress is not None:
            progress.update(1)
    seen: set[int] = set()
    for key, tensor in model.state_dict().items():
        if key in handled or tensor.data_ptr() in seen:
            continue  # a tied head shares the embedding's storage: stored once, re-tied on load
        seen.add(tensor.data_ptr())
        out[key] = tensor.detach().contiguous().clone()
    if progress is not None:
        progress.update(1)
    return out


def apply_quantized_state(model: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """Put quantized linears into ``model`` (built on the meta device or not) from
    :func:`quantize_state`'s tensors, assign the rest, and check nothing is left unset."""
    tensors = dict(tensors)
    for name in quantizable_linears(model):
        parent, leaf = _parent(model, name)
        bias = tensors.pop(f"{name}.bias", None)
        if f"{name}.int4" in tensors:
            layer: nn.Module = Int4Linear(tensors.pop(f"{name}.int4"), tensors.pop(f"{name}.int4_scale_min"), bias)
        else:
            layer = Int8Linear(tensors.pop(f"{name}.int8"), tensors.pop(f"{name}.int8_scale"), bias)
        setattr(parent, leaf, layer)
    model.load_state_dict(tensors, strict=False, assign=True)
    head = model.get_output_embeddings()
    if head is not None and head.weight.device.type == "meta":
        model.tie_weights()  # the head is the embedding table
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    if left:
        raise ValueError(f"the quantized checkpoint lacks {', '.join(left[:5])}")
    float16_tables(model)
    return model


def weight_format(model: nn.Module) -> str | None:
    """'int8' or 'int4' for a model with quantized layers, else None."""
    kinds = {type(m) for m in model.modules()}
    if Int4Linear in kinds:
        return "int4"
    return "int8" if Int8Linear in kinds else None


# ---------------------------------------------------------------------------- cache
def folder_key(folder: Path) -> str:
    """The cache key of a model folder: a GGUF conversion's own name, else a digest of
    its weight files' names, sizes and modification times (Hub snapshots never change
    a file in place; a local folder whose weights change gets a new key)."""
    marker = folder / "gpt3dev-conversion.json"
    if marker.exists() and folder.name.startswith("gguf-"):
        return folder.name
    h = hashlib.sha256(str(folder.resolve()).encode())
    for path in sorted(folder.iterdir()):
        if path.suffix in {".safetensors", ".bin", ".json"}:
            st = path.stat()
            h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return f"folder-{h.hexdigest()[:32]}"


def quantized_path(folder: Path, scheme: str, cache_dir: Path) -> Path:
    return Path(cache_dir) / f"{folder_key(folder)}.{scheme}"


def cached_quantization(folder: Path, scheme: str, cache_dir: Path) -> Path | None:
    """The complete cache entry for ``folder`` in ``scheme``, or None."""
    target = quantized_path(folder, scheme, cache_dir)
    try:
        if json.loads((target / _MARKER).read_text()).get("version") == _FORMAT_VERSION:
            return target
    except (OSError, ValueError):
        pass
    return None


def write_quantization(model: nn.Module, folder: Path, scheme: str, cache_dir: Path) -> Path:
    """Quantize a loaded float model into the cache (a temp folder renamed into place, so
    concurrent processes never see half an entry) with a progress bar; returns the entry."""
    from safetensors.torch import save_file

    target = quantized_path(folder, scheme, cache_dir)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{scheme}-", dir=cache_dir))
    try:
        total = len(quantizable_linears(model)) + 1  # the linears, then everything else
        with bar(total, f"quantizing to {scheme} (once; cached)", "layer") as progress:
            tensors = quantize_state(model, scheme, progress=progress)
        size_mb = sum(t.numel() * t.element_size() for t in tensors.values()) / 1e6
        with phase(log, f"writing the {scheme} weights ({size_mb:.0f} MB) to {target.name}"):
            save_file(tensors, str(tmp / _WEIGHTS), metadata={"format": "pt", "scheme": scheme})
        (tmp / _MARKER).write_text(json.dumps({"version": _FORMAT_VERSION, "scheme": scheme, "source": str(folder)}))
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if cached_quantization(folder, scheme, cache_dir) is None:  # not another process's entry
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_quantized_model(
    folder: Path, scheme: str, cache_dir: Path, *, dtype: torch.dtype, trust_remote_code: bool = False
) -> nn.Module:
    """The causal LM in ``folder`` with ``scheme`` weights, from the cache (made on first use)."""
    from transformers import AutoModelForCausalLM

    entry = cached_quantization(folder, scheme, cache_dir)
    if entry is None:
        log.info("quantizing %s to %s in %s (once; cached afterwards)", folder, scheme, cache_dir)
        with phase(log, f"reading the float32 weights to quantize from {folder.name}"):
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32,
                                                         trust_remote_code=trust_remote_code)
        entry = write_quantization(model, folder, scheme, cache_dir)
        del model
    with phase(log, f"loading the {scheme} weights from {entry}"):
        return _model_from_entry(folder, entry, dtype=dtype, trust_remote_code=trust_remote_code)


def _model_from_entry(folder: Path, entry: Path, *, dtype: torch.dtype, trust_remote_code: bool) -> nn.Module:
    from accelerate import init_empty_weights
    from safetensors.torch import load
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    # Parameters on the meta device (nothing allocated), buffers such as RoPE's inverse
    # frequencies computed for real.
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    # Read into memory rather than mapped: tensors converted at load (int4 repacking, the
    # float16 table) would otherwise leave their file pages resident as long as any
    # tensor of the file is used (113 MB for SmolLM2's float32 table alone).
    tensors = load((entry / _WEIGHTS).read_bytes())
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not key.endswith(("_scale", "_scale_min")):
            tensors[key] = tensor.to(dtype)
    apply_quantized_state(model, tensors)
    try:
        model.generation_config = GenerationConfig.from_pretrained(str(folder))
    except OSError:  # no generation_config.json: keep the config-derived one
        pass
    return model.eval()
