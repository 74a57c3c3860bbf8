"""Fixtures for the engine tests: the real bundled models (loaded once per session) and
tiny random-weight Llama models for scheduler/loading mechanics where output does not
matter. No Django needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from inference.engine import Engine, EngineConfig  # noqa: E402 - after HF_HUB_OFFLINE is set

from .helpers import FRANCE, SMOL_SOURCE, minilm_spec, model_cache_dir, smol_spec  # noqa: E402 - after HF_HUB_OFFLINE is set


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    path = model_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def smol_folder(cache_dir: Path) -> Path:
    """The converted SmolLM2 folder (converted on the first run only)."""
    from inference.loading import converted_gguf, package_path

    return converted_gguf(package_path(SMOL_SOURCE), cache_dir)


@pytest.fixture(scope="session")
def engine(cache_dir: Path):
    eng = Engine(EngineConfig(cache_dir=cache_dir, max_batch_size=16, max_queue=256))
    yield eng
    eng.shutdown()


# Fetched per test: the engine keeps the loaded model (a dictionary lookup), but a test
# that loads other rows may have evicted it (least recently used beyond
# max_loaded_models), and a session-wide handle would then point at an unloaded model.
@pytest.fixture
def smol(engine: Engine, smol_folder: Path):
    return engine.generator(smol_spec())


@pytest.fixture
def minilm(engine: Engine):
    return engine.embedder(minilm_spec())


@pytest.fixture
def france(smol):
    """The chat prompt of "What is the capital of France?", rendered by SmolLM2's template."""
    return smol.render_chat(FRANCE)


@pytest.fixture(scope="session")
def smol_tokenizer(smol_folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smol_folder))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smol_folder: Path) -> Path:
    """A 2-layer random-weight Llama with the SmolLM2 tokenizer, saved as a local folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(smol_folder))
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder
