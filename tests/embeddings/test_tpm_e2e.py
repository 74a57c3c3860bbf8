"""With the bundled embeddings model over uvicorn: an embeddings request's input tokens
are counted and reserved against the key's tokens-per-minute before any forward pass,
so a request bigger than the key's minute is a 429 that costs no model time."""

from __future__ import annotations

import httpx
import pytest

from tests.access.test_e2e_model import metric
from tests.live_server import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.model]

EMBEDDER = "all-MiniLM-L6-v2"
KEY = "sk-gpt3dev-embeddings-tpm-0123456789"


def test_an_embeddings_request_over_the_keys_minute_is_a_429_before_it_runs(tmp_path):
    server = LiveServer(tmp_path, API_KEYS=f"erin:{KEY}", RATE_LIMIT_TPM="3000",
                        DATABASE_URL=f"sqlite:///{tmp_path / 'own.sqlite3'}").start()
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        with httpx.Client(base_url=server.base_url, headers=auth, timeout=300) as http:
            # No wait for a fresh minute: the refused request reserves nothing, so the
            # small one's remaining tokens are the same whichever minute it falls in.
            big = ["the quick brown fox jumps over the lazy dog " * 22] * 256  # about 200 tokens each
            answer = http.post("/v1/embeddings", json={"model": EMBEDDER, "input": big})
            assert answer.status_code == 429, answer.text[:300]
            error = answer.json()["error"]
            assert error["param"] == "input" and "Limit 3000, Requested" in error["message"]
            requested = int(error["message"].split("Requested ")[1].split(".")[0])
            assert requested > 256 * 150  # counted with the model's tokenizer, not a guess
            metrics = http.get("/metrics").text
            assert metric(metrics, "gpt3dev_prompt_tokens_total", model=EMBEDDER) == 0  # nothing was embedded
            small = http.post("/v1/embeddings", json={"model": EMBEDDER, "input": ["a small input"]})
            assert small.status_code == 200, small.text
            used = small.json()["usage"]["total_tokens"]
            assert int(small.headers["x-ratelimit-remaining-tokens"]) == 3000 - used  # reserved at admission
    finally:
        server.stop()
