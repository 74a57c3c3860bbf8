"""How a sequence ends, with the real SmolLM2: EOS counted as a token, vLLM's
``stop_token_ids``, ``include_stop_str_in_output`` and ``skip_special_tokens``."""

from __future__ import annotations

import pytest

from inference.errors import InvalidInput

from .helpers import collect, ids_of, req, run, text_of

pytestmark = pytest.mark.model

ANSWER = "The capital of France is Paris."



def greedy(smol, prompt, **sampling):
    out = run(collect(smol, req(prompt, temperature=0, **sampling)))
    return out[0]


def test_eos_is_the_last_counted_token_and_adds_no_text(smol, france):
    deltas = greedy(smol, france, max_tokens=30)
    assert text_of(deltas) == ANSWER
    answer_ids = smol.tokenizer.encode(ANSWER, add_special_tokens=False)
    assert ids_of(deltas) == answer_ids + [smol.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    assert deltas[-1].finish_reason == "stop"


def test_stop_token_ids_end_like_eos(smol, france):
    paris = smol.tokenizer.encode(" Paris", add_special_tokens=False)
    assert len(paris) == 1
    deltas = greedy(smol, france, max_tokens=30, stop_token_ids=tuple(paris))
    assert text_of(deltas) == "The capital of France is"
    assert ids_of(deltas)[-1] == paris[0]  # counted, like EOS
    assert deltas[-1].finish_reason == "stop"
    kept = greedy(smol, france, max_tokens=30, stop_token_ids=tuple(paris), include_stop_str_in_output=True)
    assert text_of(kept) == "The capital of France is Paris"
    # min_tokens holds stop tokens back like EOS: the sequence then ends elsewhere
    late = greedy(smol, france, max_tokens=8, stop_token_ids=tuple(paris), min_tokens=8)
    assert paris[0] not in ids_of(late) and late[-1].finish_reason == "length"


def test_include_stop_str_in_output(smol, france):
    assert text_of(greedy(smol, france, max_tokens=30, stop=("is Par",))) == "The capital of France "
    kept = greedy(smol, france, max_tokens=30, stop=("is Par",), include_stop_str_in_output=True)
    assert text_of(kept) == "The capital of France is Par"  # the rest of the token is cut
    assert kept[-1].finish_reason == "stop"
    eos = greedy(smol, france, max_tokens=30, include_stop_str_in_output=True, skip_special_tokens=False)
    assert text_of(eos) == ANSWER + "<|im_end|>"


def test_skip_special_tokens(smol):
    # A raw chat prompt without the assistant header: the model writes "<|im_start|>" next.
    prompt = smol.tokenizer.encode("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n")
    plain = greedy(smol, prompt, max_tokens=3)
    shown = greedy(smol, prompt, max_tokens=3, skip_special_tokens=False)
    assert ids_of(plain) == ids_of(shown)
    assert smol.tokenizer.convert_ids_to_tokens(ids_of(plain)[0]) == "<|im_start|>"
    assert text_of(shown) == "<|im_start|>" + text_of(plain)
    assert text_of(plain).startswith("assistant")


def test_stop_token_ids_outside_the_vocabulary(smol, france):
    with pytest.raises(InvalidInput) as error:
        run(collect(smol, req(france, stop_token_ids=(10**7,))))
    assert error.value.param == "stop_token_ids"
