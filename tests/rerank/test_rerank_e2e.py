"""/v1/rerank and /score over real HTTP with the shipped all-MiniLM-L6-v2 (cosine
similarity of its embeddings): the relevant document first on ten fixed sets, Cohere's
client through LangChain, the Cohere v2 and Jina response fields, vLLM's /score."""

from __future__ import annotations

import cohere
import httpx
import pytest
from langchain_cohere import CohereRerank
from langchain_core.documents import Document

pytestmark = [pytest.mark.e2e, pytest.mark.model]

EMBEDDER = "all-MiniLM-L6-v2"
DISTRACTORS = [
    "Bananas are rich in potassium and taste sweet when ripe.",
    "The stock market closed lower on Friday after a volatile week.",
    "To change a flat tyre, loosen the lug nuts before jacking up the car.",
]
# (query, the one relevant document); the others are the distractors and the other answers.
SETS = [
    ("What is the capital of France?", "Paris is the capital and largest city of France."),
    ("How do plants make food from sunlight?", "Photosynthesis lets plants turn light, water and CO2 into sugar."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote the tragedy Romeo and Juliet."),
    ("What is the boiling point of water?", "Water boils at 100 degrees Celsius at sea level."),
    ("How many legs does a spider have?", "Spiders are arachnids with eight legs."),
    ("Which planet is known as the Red Planet?", "Mars is called the Red Planet because of iron oxide dust."),
    ("How do I sort a list in Python?",
     "In Python, sorted(items) returns a new sorted list; list.sort() sorts in place."),
    ("What do bees produce?", "Honey bees make honey from the nectar of flowers."),
    ("What is the largest ocean on Earth?", "The Pacific Ocean is the largest and deepest ocean."),
    ("When did the first humans land on the Moon?", "Apollo 11 landed the first astronauts on the Moon in July 1969."),
]


def documents_for(index: int) -> tuple[list[str], int]:
    """The set's documents: its answer among the distractors and two other sets' answers."""
    others = [SETS[(index + 3) % len(SETS)][1], SETS[(index + 7) % len(SETS)][1]]
    docs = [DISTRACTORS[0], others[0], DISTRACTORS[1], SETS[index][1], others[1], DISTRACTORS[2]]
    return docs, 3


@pytest.mark.parametrize("index", range(len(SETS)))
def test_the_relevant_document_ranks_first(live_server_url, index):
    query = SETS[index][0]
    documents, relevant = documents_for(index)
    answer = httpx.post(f"{live_server_url}/v1/rerank", timeout=120,
                        json={"model": EMBEDDER, "query": query, "documents": documents})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert results[0]["index"] == relevant, results
    assert results[0]["document"] == {"text": documents[relevant]}
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True) and len(results) == len(documents)


def test_jina_fields_on_every_route(live_server_url):
    documents, relevant = documents_for(0)
    for path in ("/v1/rerank", "/rerank", "/v2/rerank"):
        body = httpx.post(f"{live_server_url}{path}", timeout=120, json={
            "model": EMBEDDER, "query": SETS[0][0], "documents": [{"text": d} for d in documents], "top_n": 2,
        }).json()
        # Jina's response: model, usage.total_tokens, results[{index, document{text}, relevance_score}].
        assert body["model"] == EMBEDDER and body["id"].startswith("rerank-")
        assert isinstance(body["usage"]["total_tokens"], int) and body["usage"]["total_tokens"] > 0
        assert [set(r) for r in body["results"]] == [{"index", "relevance_score", "document"}] * 2
        assert body["results"][0]["index"] == relevant
    bare = httpx.post(f"{live_server_url}/v1/rerank", timeout=120, json={
        "model": EMBEDDER, "query": SETS[0][0], "documents": documents, "return_documents": False}).json()
    assert all(set(r) == {"index", "relevance_score"} for r in bare["results"])


def test_cohere_v2_client_parses_the_answer(live_server_url):
    client = cohere.ClientV2(api_key="unused", base_url=live_server_url)
    documents, relevant = documents_for(5)
    answer = client.rerank(model=EMBEDDER, query=SETS[5][0], documents=documents, top_n=3)
    assert [r.index for r in answer.results][0] == relevant and len(answer.results) == 3
    assert answer.meta.tokens.input_tokens > 0


def test_langchain_cohere_rerank(live_server_url):
    reranker = CohereRerank(model=EMBEDDER, base_url=live_server_url, cohere_api_key="unused", top_n=2)
    documents, relevant = documents_for(2)
    kept = reranker.compress_documents([Document(page_content=d) for d in documents], SETS[2][0])
    assert [d.page_content for d in kept][0] == documents[relevant]
    assert all("relevance_score" in d.metadata for d in kept) and len(kept) == 2
    ranked = reranker.rerank(documents, SETS[8][0], top_n=None)
    assert len(ranked) == len(documents)


def test_score_in_vllm_shape(live_server_url):
    one_to_many = httpx.post(f"{live_server_url}/score", timeout=120, json={
        "model": EMBEDDER, "text_1": SETS[3][0], "text_2": [SETS[3][1], DISTRACTORS[0]]}).json()
    assert one_to_many["object"] == "list" and one_to_many["model"] == EMBEDDER
    assert [(d["index"], d["object"]) for d in one_to_many["data"]] == [(0, "score"), (1, "score")]
    assert one_to_many["data"][0]["score"] > one_to_many["data"][1]["score"]
    assert one_to_many["usage"]["prompt_tokens"] == one_to_many["usage"]["total_tokens"] > 0
    pairs = httpx.post(f"{live_server_url}/v1/score", timeout=120, json={
        "model": EMBEDDER, "text_1": [SETS[3][0], SETS[4][0]], "text_2": [SETS[3][1], SETS[4][1]]}).json()
    assert len(pairs["data"]) == 2
    assert pairs["data"][0]["score"] == pytest.approx(one_to_many["data"][0]["score"], abs=1e-5)
    rerank = httpx.post(f"{live_server_url}/v1/rerank", timeout=120, json={
        "model": EMBEDDER, "query": SETS[3][0], "documents": [SETS[3][1]]}).json()
    assert rerank["results"][0]["relevance_score"] == pytest.approx(one_to_many["data"][0]["score"], abs=1e-5)


def test_a_document_over_the_window_is_a_400_naming_it(live_server_url):
    answer = httpx.post(f"{live_server_url}/v1/rerank", timeout=120, json={
        "model": EMBEDDER, "query": "q", "documents": ["short", "word " * 400]})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == "documents[1]" and error["code"] == "context_length_exceeded"
    assert "256" in error["message"]
    cut = httpx.post(f"{live_server_url}/v2/rerank", timeout=120, json={
        "model": EMBEDDER, "query": "q", "documents": ["short", "word " * 400], "max_tokens_per_doc": 100})
    assert cut.status_code == 200 and cut.json()["usage"]["total_tokens"] <= 3 + 3 + 102
