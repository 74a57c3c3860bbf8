"""Contract details over real HTTP (issue 12): field errors in one form, the model's
type, and what the generation endpoints count and report."""

from __future__ import annotations

import pytest

from tests.api import assert_invalid_value, error_of, post

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "SmolLM2-135M-Instruct"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}]}


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"model": 123, "prompt": "hi"}),
    ("/v1/chat/completions", CHAT | {"model": 123}),
    ("/v1/embeddings", {"model": 123, "input": "hi"}),
])
def test_a_number_for_model_is_400_naming_model(live_server_url, path, body):
    assert_invalid_value(error_of(post(live_server_url, path, body), 400), "model")


@pytest.mark.parametrize("n", [0, 9, 10**6])  # the live server runs with MAX_N=8
def test_n_errors_have_the_form_of_every_field_error(live_server_url, n):
    for path, body in (("/v1/completions", {"model": MODEL, "prompt": "hi"}), ("/v1/chat/completions", CHAT)):
        assert_invalid_value(error_of(post(live_server_url, path, body | {"n": n}), 400), "n")


# ------------------------------------------------------------------ text_offset (echo, UTF-8)
SPECIAL = {"<|im_start|>", "<|im_end|>", "<|endoftext|>"}  # SmolLM2's special tokens
ROUNDS = "你好世界 🙂 你好世界 🙂 你好世界 🙂👍🏽"


def token_bytes(token: str) -> bytes:
    """A completions logprobs token back to its bytes (special tokens write none)."""
    if token in SPECIAL:
        return b""
    if token.startswith("bytes:"):
        return bytes(int(h, 16) for h in token[len("bytes:"):].split("\\x")[1:])
    return token.encode("utf-8")


def written_texts(tokens: list[str]) -> list[str]:
    """What each token writes, whole characters: a token holding part of a character
    stands for that character (its first bytes start it, its last bytes complete it)."""
    spans, data = [], b""
    for token in tokens:
        raw = token_bytes(token)
        spans.append((len(data), len(data) + len(raw)))
        data += raw
    out = []
    for start, end in spans:
        if start == end:
            out.append("")
            continue
        while start > 0 and data[start] & 0xC0 == 0x80:
            start -= 1
        while end < len(data) and data[end] & 0xC0 == 0x80:
            end += 1
        out.append(data[start:end].decode("utf-8", errors="replace"))
    return out


def assert_offsets_point_at_tokens(text: str, logprobs: dict) -> None:
    offsets, tokens = logprobs["text_offset"], logprobs["tokens"]
    assert offsets == sorted(offsets) and offsets[-1] <= len(text)
    for i, written in enumerate(written_texts(tokens)):
        assert text[offsets[i]:].startswith(written), (i, tokens[i], offsets[i], written, text[offsets[i]:][:8])


@pytest.mark.parametrize("prompt", ["你好世界", ROUNDS])
def test_text_offset_follows_the_text_tokens_write(live_server_url, prompt):
    body = {"model": MODEL, "prompt": prompt, "echo": True, "logprobs": 1, "max_tokens": 12, "temperature": 0}
    choice = post(live_server_url, "/v1/completions", body).json()["choices"][0]
    text, logprobs = choice["text"], choice["logprobs"]
    assert text.startswith(prompt)  # echo gives the prompt as sent
    assert any(t.startswith("bytes:") for t in logprobs["tokens"])  # partial UTF-8 tokens are in play
    assert_offsets_point_at_tokens(text, logprobs)
    # streamed: the same text and the same offsets, chunk by chunk
    frames = stream_frames(live_server_url, "/v1/completions", body)
    streamed = {"tokens": [], "text_offset": []}
    for frame in frames:
        for c in frame["choices"]:
            if c["logprobs"]:
                streamed["tokens"] += c["logprobs"]["tokens"]
                streamed["text_offset"] += c["logprobs"]["text_offset"]
    assert "".join(c["text"] for f in frames for c in f["choices"]) == text
    assert streamed["tokens"] == logprobs["tokens"] and streamed["text_offset"] == logprobs["text_offset"]


def test_text_offset_with_special_tokens(live_server_url):
    """Special tokens sent as text in the prompt are echoed as sent and take their
    place; generated ones (the EOS that ends the answer) write nothing."""
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    body = {"model": MODEL, "prompt": prompt, "echo": True, "logprobs": 0, "max_tokens": 30, "temperature": 0}
    answer = post(live_server_url, "/v1/completions", body).json()
    text, logprobs = answer["choices"][0]["text"], answer["choices"][0]["logprobs"]
    assert text.startswith(prompt) and answer["choices"][0]["finish_reason"] == "stop"
    sent = answer["usage"]["prompt_tokens"]
    for token, offset in zip(logprobs["tokens"][:sent], logprobs["text_offset"][:sent]):
        assert text[offset:].startswith(token)
    generated = {key: logprobs[key][sent:] for key in ("tokens", "text_offset")}
    assert generated["tokens"][-1] == "<|im_end|>" and "<|im_end|>" not in text[len(prompt):]
    assert generated["text_offset"][0] == len(prompt) and generated["text_offset"][-1] == len(text)
    assert_offsets_point_at_tokens(text, generated)


def stream_frames(url: str, path: str, body: dict) -> list[dict]:
    import json

    response = post(url, path, body | {"stream": True})
    assert response.status_code == 200, response.text
    chunks = [part[len("data: "):] for part in response.text.split("\n\n") if part.startswith("data: ")]
    assert chunks[-1] == "[DONE]"
    return [json.loads(chunk) for chunk in chunks[:-1]]


def test_echo_logprobs_of_several_prompts_come_from_their_own_reading(live_server_url):
    """echo + logprobs: each prompt is scored while the engine reads it, alone (max_tokens
    0) or before generating; the prompt's logprobs are the same either way, streamed or
    not, and each prompt gets its own."""
    prompts = ["The capital of France is", "One, two, three, four,"]
    body = {"model": MODEL, "prompt": prompts, "echo": True, "logprobs": 3, "temperature": 0}
    scored = post(live_server_url, "/v1/completions", body | {"max_tokens": 0}).json()
    generated = post(live_server_url, "/v1/completions", body | {"max_tokens": 4}).json()
    streamed = stream_frames(live_server_url, "/v1/completions", body | {"max_tokens": 0})
    first_chunk = {c["index"]: c["logprobs"] for f in streamed for c in f["choices"] if c["logprobs"]}
    assert scored["usage"]["completion_tokens"] == 0
    for index, prompt in enumerate(prompts):
        alone, both = scored["choices"][index], generated["choices"][index]
        assert alone["text"] == prompt and alone["finish_reason"] == "length" and both["text"].startswith(prompt)
        lp, sent = alone["logprobs"], len(alone["logprobs"]["tokens"])
        assert lp["token_logprobs"][0] is None and all(len(top) == 3 for top in lp["top_logprobs"][1:])
        assert both["logprobs"]["tokens"][:sent] == lp["tokens"] and len(both["logprobs"]["tokens"]) == sent + 4
        for a, b in zip(lp["token_logprobs"][1:], both["logprobs"]["token_logprobs"][1:sent]):
            assert abs(a - b) < 1e-4
        assert first_chunk[index]["tokens"] == lp["tokens"]
        assert first_chunk[index]["token_logprobs"][1:] == pytest.approx(lp["token_logprobs"][1:], abs=1e-4)
    assert scored["choices"][0]["logprobs"]["tokens"] != scored["choices"][1]["logprobs"]["tokens"]


# ------------------------------------------------------- EOS in usage, streamed usage stats
RAW_CHAT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def token_counts(usage: dict) -> dict:
    """The counts two answers to the same request share; ``prompt_tokens_details``
    (cached_tokens) depends on what the prefix cache held at the time."""
    return {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def streamed_usage(url: str, path: str, body: dict) -> list[dict]:
    frames = stream_frames(url, path, body | {"stream_options": {"include_usage": True}})
    assert frames[-1]["choices"] == []
    return frames


def test_eos_is_counted_the_same_by_both_endpoints_plain_and_streamed(live_server_url):
    chat = {"model": MODEL, "messages": QUESTION, "max_tokens": 30, "temperature": 0, "logprobs": True}
    plain = post(live_server_url, "/v1/chat/completions", chat).json()
    content = plain["choices"][0]["logprobs"]["content"]
    assert plain["choices"][0]["finish_reason"] == "stop"
    assert content[-1]["token"] == "<|im_end|>" and "<|im_end|>" not in plain["choices"][0]["message"]["content"]
    assert plain["usage"]["completion_tokens"] == len(content)  # the EOS counted, as vLLM counts it
    streamed = streamed_usage(live_server_url, "/v1/chat/completions", chat)
    assert token_counts(streamed[-1]["usage"]) == token_counts(plain["usage"])

    text = {"model": MODEL, "prompt": RAW_CHAT, "max_tokens": 30, "temperature": 0, "logprobs": 0}
    plain_text = post(live_server_url, "/v1/completions", text).json()
    tokens = plain_text["choices"][0]["logprobs"]["tokens"]
    assert plain_text["choices"][0]["finish_reason"] == "stop" and tokens[-1] == "<|im_end|>"
    assert plain_text["usage"]["completion_tokens"] == len(tokens)
    streamed = streamed_usage(live_server_url, "/v1/completions", text)
    assert token_counts(streamed[-1]["usage"]) == token_counts(plain_text["usage"])
    # and without logprobs the count is the same
    again = post(live_server_url, "/v1/completions", text | {"logprobs": None}).json()["usage"]
    assert token_counts(again) == token_counts(plain_text["usage"])


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"model": MODEL, "messages": QUESTION, "max_tokens": 12, "temperature": 0, "n": 2}),
    ("/v1/completions", {"model": MODEL, "prompt": ["The capital of France is", "Water is"], "max_tokens": 6,
                         "temperature": 0}),
])
def test_continuous_usage_stats_puts_the_usage_so_far_on_every_chunk(live_server_url, path, body):
    final = post(live_server_url, path, body).json()["usage"]
    frames = stream_frames(live_server_url, path, body | {"stream_options": {"continuous_usage_stats": True}})
    usages = [frame["usage"] for frame in frames]
    assert all(u is not None and u["prompt_tokens"] == final["prompt_tokens"] for u in usages)
    assert all(u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] for u in usages)
    counts = [u["completion_tokens"] for u in usages]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    # implies include_usage: the last chunk has it all
    assert frames[-1]["choices"] == [] and token_counts(usages[-1]) == token_counts(final)
    assert len(set(counts)) > 2  # it moves while the text streams, not only at the end


# --------------------------------------------- vLLM's stop_token_ids, include_stop_str..., skip_special_tokens
PARIS = 7042  # " Paris" in SmolLM2's vocabulary (checked below through the server)


def both_ways(url: str, path: str, body: dict) -> tuple[str, dict]:
    """The text and usage of a plain request, after checking that streaming agrees."""
    plain = post(url, path, body).json()
    assert "choices" in plain, plain
    choice = plain["choices"][0]
    text = choice["message"]["content"] if "message" in choice else choice["text"]
    frames = streamed_usage(url, path, body)
    pieces = [c.get("delta", {}).get("content") or c.get("text") or "" for f in frames for c in f["choices"]]
    assert "".join(pieces) == text and token_counts(frames[-1]["usage"]) == token_counts(plain["usage"])
    finishes = [c["finish_reason"] for f in frames for c in f["choices"] if c["finish_reason"]]
    assert finishes == [choice["finish_reason"]]
    return text, plain["usage"] | {"finish_reason": choice["finish_reason"]}


def test_paris_token_id(live_server_url):
    body = {"model": MODEL, "prompt": [PARIS], "echo": True, "max_tokens": 0}
    assert post(live_server_url, "/v1/completions", body).json()["choices"][0]["text"] == " Paris"


@pytest.mark.parametrize("path, base", [
    ("/v1/chat/completions", {"model": MODEL, "messages": QUESTION, "max_tokens": 30, "temperature": 0}),
    ("/v1/completions", {"model": MODEL, "prompt": RAW_CHAT, "max_tokens": 30, "temperature": 0}),
])
def test_vllm_stop_fields(live_server_url, path, base):
    url = live_server_url
    answer, usage = both_ways(url, path, base)
    assert answer == "The capital of France is Paris." and usage["finish_reason"] == "stop"

    text, cut = both_ways(url, path, base | {"stop_token_ids": [PARIS]})
    assert text == "The capital of France is" and cut["finish_reason"] == "stop"
    assert cut["completion_tokens"] == usage["completion_tokens"] - 2  # up to " Paris", which counts
    text, _ = both_ways(url, path, base | {"stop_token_ids": [PARIS], "include_stop_str_in_output": True})
    assert text == "The capital of France is Paris"

    text, _ = both_ways(url, path, base | {"stop": [" is P"], "include_stop_str_in_output": True})
    assert text == "The capital of France is P"
    text, _ = both_ways(url, path, base | {"include_stop_str_in_output": True, "skip_special_tokens": False})
    assert text == answer + "<|im_end|>"


def test_skip_special_tokens_false_writes_them(live_server_url):
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"  # the model opens the next turn
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 3, "temperature": 0}
    skipped, _ = both_ways(live_server_url, "/v1/completions", body)
    shown, _ = both_ways(live_server_url, "/v1/completions", body | {"skip_special_tokens": False})
    assert shown == "<|im_start|>" + skipped and skipped.startswith("assistant")


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", CHAT),
    ("/v1/completions", {"model": MODEL, "prompt": "hi"}),
])
@pytest.mark.parametrize("field, value", [
    ("stop_token_ids", [10**7]),
    ("stop_token_ids", [-1]),
    ("stop_token_ids", "2"),
    ("prompt_logprobs", 1),  # vLLM fields this server does not do are refused by name
    ("use_beam_search", True),
    ("chat_template_kwargs", {"enable_thinking": False}),
])
def test_fields_it_does_not_do_are_refused_by_name(live_server_url, path, body, field, value):
    error = error_of(post(live_server_url, path, body | {field: value}), 400)
    assert error["param"] in (field, f"{field}[0]")
    assert_invalid_value(error, error["param"])


def test_openai_bookkeeping_fields_are_accepted(live_server_url):
    body = CHAT | {"max_tokens": 1, "user": "u1", "metadata": {"k": "v"}, "store": False, "service_tier": "auto"}
    assert post(live_server_url, "/v1/chat/completions", body).status_code == 200
