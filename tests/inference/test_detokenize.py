"""Stop-string holdback and UTF-8-safe incremental detokenisation."""

from __future__ import annotations

import pytest

from inference.detokenize import IncrementalDetokenizer, StopMatcher, TokenTable


def feed(matcher: StopMatcher, chunks):
    released, stopped = [], False
    for chunk in chunks:
        out, stopped = matcher.push(chunk)
        released.append(out)
        if stopped:
            break
    return released, stopped


def test_stop_spanning_tokens_is_cut_exactly():
    released, stopped = feed(StopMatcher(["o w"]), ["Hel", "lo", " wo", "rld"])
    assert stopped
    # "o" is held when it arrives (it could start "o w"), then the stop is cut out.
    assert released == ["Hel", "l", ""]


def test_only_possible_stop_prefixes_are_held():
    m = StopMatcher(["xyz"])
    assert m.push("ab") == ("ab", False)  # nothing that could start "xyz"
    assert m.push("cx") == ("c", False)  # "x" held
    assert m.push("y") == ("", False)  # "xy" held
    assert m.push("a") == ("xya", False)  # not a stop after all: released
    assert m.push("xy") == ("", False)
    assert m.flush() == "xy"  # end of sequence releases what was held


def test_earliest_of_several_stops_wins_and_stop_text_never_emitted():
    released, stopped = feed(StopMatcher(["END", "\n\n"]), ["a\n", "\nb END"])
    assert stopped and "".join(released) == "a"


def test_stop_inside_one_token():
    released, stopped = feed(StopMatcher(["stop"]), ["abcstopdef"])
    assert stopped and released == ["abc"]


def test_no_stops_releases_everything():
    assert StopMatcher(()).push("abc") == ("abc", False)


@pytest.fixture(scope="module")
def table(smol_tokenizer):
    return TokenTable(smol_tokenizer)


@pytest.mark.model
@pytest.mark.parametrize("text", ["Hello 😀 world 🎉🎉", "你好，世界！今天天气很好。", "naïve café — ✓ 𝄞"])
def test_incremental_detokenizer_never_breaks_utf8(smol_tokenizer, table, text):
    ids = smol_tokenizer.encode(text)
    detok = IncrementalDetokenizer(table)
    pieces = [detok.add(i) for i in ids] + [detok.flush()]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == text == smol_tokenizer.decode(ids)


@pytest.mark.model
def test_partial_utf8_tokens_are_held_then_released(smol_tokenizer, table):
    ids = smol_tokenizer.encode("😀")
    assert len(ids) > 1  # the emoji is split over byte tokens in SmolLM2's vocabulary
    detok = IncrementalDetokenizer(table)
    outs = [detok.add(i) for i in ids]
    assert outs[:-1] == [""] * (len(ids) - 1) and outs[-1] == "😀"
    assert table.token_text(ids[0]).startswith("bytes:\\x")


@pytest.mark.model
def test_special_tokens_have_display_text_but_no_output_text(smol_tokenizer, table):
    eos = smol_tokenizer.eos_token_id
    assert table.token_text(eos) == "<|im_end|>"
    assert IncrementalDetokenizer(table).add(eos) == ""
    hello = smol_tokenizer.encode(" world")[0]
    assert table.token_text(hello) == " world"
    assert table.token_bytes(hello) == b" world"
