"""Contract details over real HTTP (issue 12): field errors in one form, the model's
type, and what the generation endpoints count and report."""

from __future__ import annotations

import httpx
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "SmolLM2-135M-Instruct"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}]}


def post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=120)


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"model": 123, "prompt": "hi"}),
    ("/v1/chat/completions", CHAT | {"model": 123}),
    ("/v1/embeddings", {"model": 123, "input": "hi"}),
])
def test_a_number_for_model_is_400_naming_model(live_server_url, path, body):
    response = post(live_server_url, path, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "model"
    assert error["message"].startswith("Invalid value for 'model': ")


@pytest.mark.parametrize("n", [0, 9, 10**6])  # the live server runs with MAX_N=8
def test_n_errors_have_the_form_of_every_field_error(live_server_url, n):
    for path, body in (("/v1/completions", {"model": MODEL, "prompt": "hi"}), ("/v1/chat/completions", CHAT)):
        response = post(live_server_url, path, body | {"n": n})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "n"
        assert error["message"].startswith("Invalid value for 'n': "), error
