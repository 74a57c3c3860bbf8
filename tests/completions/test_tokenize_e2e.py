"""POST /tokenize and /detokenize over real HTTP with the real SmolLM2 (and MiniLM): the
counts are the prompt_tokens chat and completions report for the same input, tools
included; detokenize(tokenize(x)) == x over a multilingual and emoji corpus; vLLM's
shapes; and errors that name their field."""

from __future__ import annotations

import httpx
import pytest

from tests.api import post

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "SmolLM2-135M-Instruct"
EMBEDDER = "all-MiniLM-L6-v2"
WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "  leading and trailing spaces, double  spaces and a tab\tand\nnew lines\n\n",
    "Größe, Straße, déjà vu, naïve café, São Paulo, Ærøskøbing",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Ελληνικά: Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
    "日本語のテキスト：東京は日本の首都です。",
    "中文：北京是中国的首都。",
    "한국어: 서울은 대한민국의 수도입니다.",
    "العربية: القاهرة هي عاصمة مصر.",
    "עברית: ירושלים",
    "हिन्दी: नई दिल्ली भारत की राजधानी है।",
    "ไทย: กรุงเทพมหานคร",
    "Emoji: 🙂🚀🇫🇷 👩‍👩‍👧‍👦 ❤️‍🔥 🧑🏽‍💻 and a lone 🫠",
    "Code: def f(x):\n    return x ** 2  # → squares; λ-calculus ∀x∃y",
    "<|im_start|>user\nSpecial tokens written in the text<|im_end|>",
]


def test_prompt_count_equals_completions_prompt_tokens(live_server_url):
    prompt = "The capital of France is"
    tokenized = post(live_server_url, "/tokenize", {"model": MODEL, "prompt": prompt, "return_token_strs": True})
    assert tokenized.status_code == 200, tokenized.text
    body = tokenized.json()
    assert set(body) == {"count", "max_model_len", "tokens", "token_strs"}
    assert body["count"] == len(body["tokens"]) == len(body["token_strs"])
    window = httpx.get(f"{live_server_url}/v1/models/{MODEL}", timeout=30).json()["max_context_tokens"]
    assert body["max_model_len"] == window
    completion = post(live_server_url, "/v1/completions", {"model": MODEL, "prompt": prompt, "max_tokens": 1}).json()
    assert completion["usage"]["prompt_tokens"] == body["count"]
    # Token ids sent as the prompt are read as the same prompt.
    again = post(live_server_url, "/v1/completions", {"model": MODEL, "prompt": body["tokens"], "max_tokens": 1,
                                                       "temperature": 0, "echo": True}).json()
    assert again["choices"][0]["text"].startswith(prompt)


@pytest.mark.parametrize("extra", [
    {},
    {"tools": WEATHER},
    {"tools": WEATHER, "tool_choice": "required"},
    {"tools": WEATHER, "tool_choice": "none"},
])
def test_chat_count_equals_chat_prompt_tokens(live_server_url, extra):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris? 🙂"}]
    tokenized = post(live_server_url, "/v1/tokenize", {"model": MODEL, "messages": messages, **extra}).json()
    chat = post(live_server_url, "/v1/chat/completions",
                {"model": MODEL, "messages": messages, "max_tokens": 1, **extra}).json()
    assert chat["usage"]["prompt_tokens"] == tokenized["count"], (tokenized, chat)
    if extra.get("tools") and extra.get("tool_choice") != "none":
        plain = post(live_server_url, "/tokenize", {"model": MODEL, "messages": messages}).json()
        assert tokenized["count"] > plain["count"]  # the tool prompt is counted


def test_chat_count_with_tool_history(live_server_url):
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"sky\": \"sunny\"}"},
    ]
    tokenized = post(live_server_url, "/tokenize", {"model": MODEL, "messages": messages, "tools": WEATHER}).json()
    chat = post(live_server_url, "/v1/chat/completions",
                {"model": MODEL, "messages": messages, "tools": WEATHER, "max_tokens": 1}).json()
    assert chat["usage"]["prompt_tokens"] == tokenized["count"]


def test_add_generation_prompt_false_leaves_out_the_assistant_header(live_server_url):
    messages = [{"role": "user", "content": "Hello"}]
    full = post(live_server_url, "/tokenize", {"model": MODEL, "messages": messages, "return_token_strs": True}).json()
    bare = post(live_server_url, "/tokenize",
                {"model": MODEL, "messages": messages, "add_generation_prompt": False}).json()
    assert full["tokens"][: bare["count"]] == bare["tokens"] and full["count"] > bare["count"]
    text = post(live_server_url, "/detokenize", {"model": MODEL, "tokens": full["tokens"]}).json()["prompt"]
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("text", CORPUS)
def test_detokenize_of_tokenize_is_the_text(live_server_url, text):
    for prefix in ("", "/v1"):
        tokens = post(live_server_url, f"{prefix}/tokenize", {"model": MODEL, "prompt": text}).json()["tokens"]
        answer = post(live_server_url, f"{prefix}/detokenize", {"model": MODEL, "tokens": tokens})
        assert answer.status_code == 200 and answer.json() == {"prompt": text}


def test_embeddings_models_tokenize_too(live_server_url):
    body = post(live_server_url, "/tokenize", {"model": EMBEDDER, "prompt": "Hello world"}).json()
    assert body == {"count": 4, "max_model_len": 256, "tokens": [101, 7592, 2088, 102]}
    embedded = post(live_server_url, "/v1/embeddings", {"model": EMBEDDER, "input": "Hello world"}).json()
    assert embedded["usage"]["prompt_tokens"] == body["count"]
    bare = post(live_server_url, "/tokenize", {"model": EMBEDDER, "prompt": "Hello world", "add_special_tokens": False})
    assert bare.json()["tokens"] == [7592, 2088]


@pytest.mark.parametrize("path, body, param", [
    ("/tokenize", {"model": MODEL}, "prompt"),
    ("/tokenize", {"model": MODEL, "prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "messages"),
    ("/tokenize", {"model": MODEL, "prompt": 12}, "prompt"),
    ("/tokenize", {"model": MODEL, "prompt": "a", "tools": WEATHER}, "tools"),
    ("/tokenize", {"model": MODEL, "messages": [{"role": "wizard", "content": "b"}]}, "messages[0].role"),
    ("/tokenize", {"model": MODEL, "messages": [{"role": "user", "content": "b"}], "tools": "x"}, "tools"),
    ("/tokenize", {"model": MODEL, "prompt": "a", "continue_final_message": True}, "continue_final_message"),
    ("/tokenize", {"model": EMBEDDER, "messages": [{"role": "user", "content": "b"}]}, "messages"),
    ("/tokenize", {"model": "nope", "prompt": "a"}, "model"),
    ("/detokenize", {"model": MODEL, "tokens": [1, 99999999]}, "tokens"),
    ("/detokenize", {"model": MODEL, "tokens": [1, -1]}, "tokens"),
    ("/detokenize", {"model": MODEL, "tokens": [True]}, "tokens"),
    ("/v1/detokenize", {"model": MODEL, "tokens": "1 2"}, "tokens"),
])
def test_bad_input_is_a_400_naming_the_field(live_server_url, path, body, param):
    answer = post(live_server_url, path, body)
    assert answer.status_code in (400, 404), answer.text
    error = answer.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
