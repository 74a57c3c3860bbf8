"""Turn a :class:`ModelSpec` into loaded torch objects.

Responsibilities:

* resolve ``source_type``/``source`` to a local folder (package data, local path or a
  Hugging Face Hub snapshot, honouring ``revision``/``hf_token`` and offline mode);
* convert a GGUF file once into a plain safetensors folder, cached under
  ``EngineConfig.cache_dir/<sha256 of the gguf file>`` so later loads skip the slow
  dequantisation (the conversion is written to a temp folder and renamed into place,
  so concurrent processes never see half a folder);
* pick the device and dtype ("auto" rules live in :func:`choose_device` and
  :func:`choose_dtype`), and load a causal LM in it (:func:`load_causal_lm`): the
  weight formats ``int8``/``int4`` go through :mod:`inference.quant` and its cache.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from . import fused, quant, sources
from .errors import ModelUnavailable
from .progress import bar, phase
from .types import ModelSpec

log = logging.getLogger(__name__)

# Bump when the conversion layout changes so stale cache entries are ignored.
_CONVERSION_VERSION = "2"
_COMPLETE_MARKER = "gpt3dev-conversion.json"


def choose_device(requested: str, default_device: str = "auto") -> torch.device:
    """'auto' means the engine default; if that is 'auto' too: cuda, then mps, then cpu."""
    name = requested if requested != "auto" else default_device
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailable(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def choose_dtype(requested: str, device: torch.device, cpu_auto: str = "float32") -> torch.dtype:
    """The compute dtype for a dtype name. 'auto': bfloat16 on CUDA with bf16 support
    (else float16), float16 on MPS, ``cpu_auto`` on CPU. The weight formats ``int8`` and
    ``int4`` compute in float32 (see :mod:`inference.quant`).

    Why not bfloat16 on CPU: in bfloat16 the numerics of a row depend on the shape of the
    batch it is computed in (matmul blocking, padding), so greedy argmax ties flip: with
    SmolLM2, 9 of 16 greedy requests produced different tokens batched than alone
    (``python -m bench.determinism``), versus 0 of 16 in float32.
    """
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    table.update({scheme: torch.float32 for scheme in quant.QUANT_SCHEMES})
    if requested in table:
        return table[requested]
    if requested != "auto":
        raise ModelUnavailable(f"unknown dtype {requested!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return table.get(cpu_auto, torch.float32)


def weight_scheme(requested: str, device: torch.device, cpu_auto: str = "float32") -> str | None:
    """'int8' or 'int4' where the spec (or 'auto' on CPU) asks for quantized weights, else None."""
    name = cpu_auto if requested == "auto" and device.type == "cpu" else requested
    if name not in quant.QUANT_SCHEMES:
        return None
    if device.type != "cpu":
        raise ModelUnavailable(f"dtype {name!r} is a CPU weight format; this model is placed on {device.type}")
    return name


def load_causal_lm(
    folder: Path, spec: ModelSpec, device: torch.device, *, cache_dir: Path, cpu_auto: str = "float32"
) -> Any:
    """The causal LM of ``folder`` in the spec's dtype on ``device``, in eval mode, with
    :mod:`inference.fused`'s norms."""
    from transformers import AutoModelForCausalLM

    scheme = weight_scheme(spec.dtype, device, cpu_auto)
    if scheme is not None:
        model = quant.load_quantized_model(
            folder, scheme, cache_dir, dtype=torch.float32, trust_remote_code=spec.trust_remote_code
        )
    else:
        dtype = choose_dtype(spec.dtype, device, cpu_auto)
        # Read into memory, not mapped: the engine's forward re-lays most weights out
        # (fused, packed), and a mapping of the file would stay resident beside them
        # for as long as any tensor still reads it (513 MB for SmolLM2 in float32).
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=dtype, trust_remote_code=spec.trust_remote_code, disable_mmap=True
        )
        model = model.to(device).eval()
    fused.fuse_norms(model)  # same float32 numerics, fewer ops per step
    return model


def weight_format(model: Any) -> str:
    """What a loaded model's weights are: 'int8', 'int4', or its parameters' dtype name."""
    return quant.weight_format(model) or str(next(model.parameters()).dtype).removeprefix("torch.")


def package_path(source: str) -> Path:
    """'pkg/rel/path' -> absolute path inside the installed package ``pkg``."""
    try:
        return sources.package_path(source)
    except sources.SourceError as exc:
        raise ModelUnavailable(str(exc)) from None


def sha256_file(path: Path) -> str:
    """The file's SHA-256; a bar (shown only past a second) while a large file is read."""
    h = hashlib.sha256()
    with open(path, "rb") as f, bar(path.stat().st_size, f"hashing {path.name}", "B", delay=1.0) as progress:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            progress.update(len(chunk))
    return h.hexdigest()


def hub_snapshot(spec: ModelSpec, offline: bool) -> Path:
    """Local snapshot of a Hub repo. Offline: only what is already in the HF cache.

    Online metadata requests get a short timeout so a dead network fails fast instead
    of hanging a request (the engine also remembers the failure for a while).
    """
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub ships with transformers
        raise ModelUnavailable("huggingface_hub is not installed") from exc
    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja", "1_Pooling/*"]
    if spec.trust_remote_code:
        patterns.append("*.py")
    try:
        folder = snapshot_download(
            repo_id=spec.source,
            revision=spec.revision,
            token=spec.hf_token,
            local_files_only=offline,
            allow_patterns=patterns,
            etag_timeout=10,
        )
    except Exception as exc:  # any hub/network failure means "cannot load" to the caller
        if offline:
            raise ModelUnavailable(
                f"model {spec.id!r}: Hub repo {spec.source!r} is not in the local cache and "
                "cannot be downloaded because the server is offline (HF_HUB_OFFLINE)"
            ) from exc
        raise ModelUnavailable(
            f"model {spec.id!r}: Hub repo {spec.source!r} cannot be downloaded: {exc}"
        ) from exc
    return Path(folder)


def resolve_path(spec: ModelSpec, offline: bool) -> Path:
    """The spec's weights as a local path: a folder, or a .gguf file still to convert."""
    if spec.source_type == "package":
        return package_path(spec.source)
    if spec.source_type == "local":
        path = Path(spec.source).expanduser()
        if not path.exists():
            raise ModelUnavailable(f"model {spec.id!r}: local path {str(path)!r} does not exist")
        return path
    if spec.source_type == "hub":
        return hub_snapshot(spec, offline)
    raise ModelUnavailable(f"unknown source_type {spec.source_type!r}")


def resolve_model_folder(spec: ModelSpec, cache_dir: Path, offline: bool) -> Path:
    """A plain transformers folder for ``spec``; GGUF files go through the conversion cache."""
    path = resolve_path(spec, offline)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelUnavailable(f"model {spec.id!r}: {path.name} is neither a folder nor a .gguf file")
        return converted_gguf(path, cache_dir)
    return path


def converted_gguf(gguf_path: Path, cache_dir: Path) -> Path:
    """Return the cached safetensors conversion of ``gguf_path``, converting on first use."""
    digest = sha256_file(gguf_path)
    target = Path(cache_dir) / f"gguf-{digest}"
    marker = target / _COMPLETE_MARKER
    if marker.exists():
        try:
            if json.loads(marker.read_text()).get("version") == _CONVERSION_VERSION:
                return target
        except (OSError, ValueError):
            pass
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=cache_dir))
    try:
        _convert_gguf_into(gguf_path, tmp)
        (tmp / _COMPLETE_MARKER).write_text(
            json.dumps({"version": _CONVERSION_VERSION, "source": gguf_path.name, "sha256": digest})
        )
        if target.exists():
            # A stale or partial entry (another version): replace it.
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process won the race and put a complete folder there first.
            if not marker.exists():
                raise
    except Exception as exc:
        raise ModelUnavailable(f"cannot convert GGUF file {gguf_path.name}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


_GGUF_PATCH_LOCK = threading.Lock()


@contextmanager
def _gguf_reads_shared() -> Iterator[None]:
    """During one conversion, read the GGUF file's metadata and build gguf's name map once.

    For architectures transformers has no fast GGUF reader for (Llama among them), the
    configuration, the weights and the tokenizer each open the file with
    ``gguf.GGUFReader``, which parses every string of the vocabulary and merges one at
    a time, and turn its fields into Python values: seconds each. And the weights' name
    mapping calls ``gguf.get_tensor_name_map(arch, layers)`` afresh for every module of
    the model, each call rebuilding a table of every tensor name of every architecture.
    All of these only read what they build, so within the conversion one reader per
    file, one metadata parse (``return_tensors=False``; callers get copies) and one name
    map serve every caller. The lock keeps two conversions from restoring each other's
    patches; everything is put back when the conversion ends."""
    try:
        import gguf
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # transformers will say that gguf is needed
        yield
        return
    with _GGUF_PATCH_LOCK:
        name_map, load, reader = gguf.get_tensor_name_map, gguf_utils.load_gguf_checkpoint, gguf.GGUFReader
        parsed: dict[str, Any] = {}
        readers: dict[str, Any] = {}

        def reader_once(path: Any, mode: str = "r") -> Any:
            if mode != "r":
                return reader(path, mode)
            if str(path) not in readers:
                readers[str(path)] = reader(path)
            return readers[str(path)]

        def load_once(path: Any, return_tensors: bool = False, *args: Any, **kwargs: Any) -> Any:
            if return_tensors or args or kwargs:
                return load(path, return_tensors, *args, **kwargs)
            if str(path) not in parsed:
                parsed[str(path)] = load(path, False)
            return copy.deepcopy(parsed[str(path)])

        gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
        gguf_utils.load_gguf_checkpoint = load_once
        gguf.GGUFReader = reader_once
        try:
            yield
        finally:
            gguf.get_tensor_name_map, gguf_utils.load_gguf_checkpoint, gguf.GGUFReader = name_map, load, reader


def _convert_gguf_into(gguf_path: Path, out: Path) -> None:
    """Dequantise a GGUF checkpoint and write config, safetensors weights, tokenizer and
    generation config, each phase announced (see :mod:`inference.progress`)."""
    log.info("converting GGUF %s to float32 safetensors in %s (once; cached afterwards)", gguf_path, out.parent)
    with phase(log, "importing transformers' GGUF support"):
        from transformers import modeling_gguf_pytorch_utils  # noqa: F401 - the import is the phase
    with _gguf_reads_shared():
        _convert_gguf_phases(gguf_path, out)


def _convert_gguf_phases(gguf_path: Path, out: Path) -> None:
    folder, name = str(gguf_path.parent), gguf_path.name
    with phase(log, f"reading the model configuration from {name}"):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        model_config = AutoConfig.from_pretrained(folder, gguf_file=name)
    kwargs: dict[str, Any] = {"gguf_file": name, "dtype": torch.float32, "config": model_config}
    try:
        from transformers.utils.quantization_config import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except Exception:  # older transformers: dequantisation is the default anyway
        pass
    # transformers reads the tensor index and maps names first (silent), then draws its
    # own bar over the tensors it dequantizes.
    with phase(log, f"reading and dequantizing the tensors of {name}"):
        try:
            model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
        except TypeError:
            kwargs.pop("quantization_config", None)
            model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    with phase(log, f"building the tokenizer from the vocabulary in {name}"):
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)

    with phase(log, "writing the float32 weights and the tokenizer"):
        _write_conversion(model, tokenizer, out)


def _write_conversion(model: Any, tokenizer: Any, out: Path) -> None:
    """``save_pretrained`` refuses GGUF-quantised models, so the state dict is written by
    hand (tied weights stored once, quantization_config dropped)."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    state = model.state_dict()
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    tensors: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    for key, tensor in state.items():
        if tied and key == "lm_head.weight":
            continue  # re-tied from embed_tokens on load
        ptr = tensor.data_ptr()
        if ptr in seen:
            continue  # safetensors refuses shared storage; the tie restores it
        seen[ptr] = key
        tensors[key] = tensor.detach().to(torch.float32).contiguous().clone()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    del tensors

    config = model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "gguf_file"):
        config.pop(key, None)
    config["dtype"] = "float32"
    # GGUF-built configs carry no architectures list; AutoModel needs it for some paths.
    config["architectures"] = [type(model).__name__]
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    tokenizer.save_pretrained(str(out))
    try:
        gen = model.generation_config if model.generation_config is not None else GenerationConfig()
        gen.save_pretrained(str(out))
    except Exception:  # generation config is optional
        pass
