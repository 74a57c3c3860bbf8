"""What users see, with the real SmolLM2-135M-Instruct (float32, loaded once)."""

from __future__ import annotations

import asyncio
import random

import pytest

from inference.errors import InvalidInput
from inference.types import GenerationRequest, SamplingParams

from .helpers import FRANCE, assert_idle, collect, ids_of, req, run, text_of

pytestmark = pytest.mark.model




def test_metadata(smol):
    assert smol.context_length == 8192
    assert smol.vocab_size == 49152
    assert smol.has_chat_template
    assert smol.encode("Hello world") == [19556, 905]  # no special tokens added


def test_greedy_chat_answer(smol, france):
    out = run(collect(smol, req(france, max_tokens=30, temperature=0)))
    assert text_of(out[0]) == "The capital of France is Paris."
    assert [d.finish_reason for d in out[0]].count("stop") == 1 and out[0][-1].finish_reason == "stop"
    # EOS ends the sequence and is its last token (counted, as vLLM counts it), with no text
    assert ids_of(out[0])[-1] == 2 and ids_of(out[0]).count(2) == 1
    assert out[0][-1].token_ids == (2,) and out[0][-1].text == ""


def test_length_finish(smol, france):
    out = run(collect(smol, req(france, max_tokens=3, temperature=0)))
    assert out[0][-1].finish_reason == "length" and len(ids_of(out[0])) == 3
    assert text_of(out[0]) == "The capital of"


def test_stop_string_across_tokens_is_cut(smol, france):
    out = run(collect(smol, req(france, max_tokens=30, temperature=0, stop=("is Par", "zzz"))))
    assert text_of(out[0]) == "The capital of France "
    assert out[0][-1].finish_reason == "stop"
    assert all("Par" not in d.text for d in out[0])


def test_ignore_eos_and_min_tokens(smol, france):
    out = run(collect(smol, req(france, max_tokens=12, temperature=0, ignore_eos=True)))
    assert out[0][-1].finish_reason == "length" and len(ids_of(out[0])) == 12
    out = run(collect(smol, req(france, max_tokens=20, temperature=0, min_tokens=10)))
    assert len(ids_of(out[0])) >= 10


def test_logprobs_top_k(smol, france):
    for k in (0, 5, 20):
        out = run(collect(smol, req(france, max_tokens=6, temperature=0, logprobs=k)))
        deltas = out[0]
        lps = [lp for d in deltas for lp in d.logprobs]
        assert [lp.token_id for lp in lps] == ids_of(deltas)
        for lp in lps:
            assert len(lp.top) == k and lp.logprob <= 0
            assert lp.token == smol.token_text(lp.token_id)
            if k:
                assert lp.top[0].token_id == lp.token_id  # greedy picks the most likely
                assert abs(lp.top[0].logprob - lp.logprob) < 1e-6
                assert all(a.logprob >= b.logprob for a, b in zip(lp.top, lp.top[1:]))
    no_lp = run(collect(smol, req(france, max_tokens=3, temperature=0)))
    assert all(d.logprobs == () for d in no_lp[0])


def test_seeded_sampling_reproducible_and_n_sequences_differ(smol, france):
    a = run(collect(smol, req(france, n=3, max_tokens=20, temperature=1.0, seed=1234)))
    b = run(collect(smol, req(france, n=3, max_tokens=20, temperature=1.0, seed=1234)))
    assert {i: ids_of(v) for i, v in a.items()} == {i: ids_of(v) for i, v in b.items()}
    assert len({tuple(ids_of(v)) for v in a.values()}) > 1


def test_utf8_text_matches_tokenizer_decode(smol, smol_tokenizer):
    # Ask for emoji/CJK so multi-byte characters span several byte-level tokens.
    msgs = [{"role": "user", "content": "Write 你好世界 and three emoji like 😀🎉🚀."}]
    ids = smol.render_chat(msgs)
    out = run(collect(smol, req(ids, max_tokens=40, temperature=0.7, seed=5, ignore_eos=True)))
    text = text_of(out[0])
    # Characters split across tokens are held until complete, never shown half-done.
    # Only a "length" cut in the middle of a character ends with U+FFFD, as HF decode does.
    assert "\ufffd" not in text_of(out[0][:-1])
    assert any(d.text == "" for d in out[0][:-1])  # a partial character was held back
    assert text == smol_tokenizer.decode(ids_of(out[0]), skip_special_tokens=True)


def test_render_chat_errors(smol, engine):
    from .helpers import smol_spec

    broken = engine.generator(smol_spec(id="smol-broken-template", chat_template="{{ raise_exception('nope') }}"))
    try:
        with pytest.raises(InvalidInput) as info:
            broken.render_chat(FRANCE)
        assert info.value.param == "messages"
    finally:
        engine.unload("smol-broken-template")


def test_score_prompt(smol, france):
    lps = run(smol.score_prompt(france, 2))
    assert lps[0] is None and len(lps) == len(france)
    assert all(lp is not None and len(lp.top) == 2 for lp in lps[1:])


def test_score_prompt_agrees_with_generation_logprobs(smol, france):
    out = run(collect(smol, req(france, max_tokens=5, temperature=0, logprobs=3)))
    gen_lps = [lp for d in out[0] for lp in d.logprobs]
    scored = run(smol.score_prompt(list(france) + ids_of(out[0]), 3))[len(france):]
    for g, s in zip(gen_lps, scored):
        assert s.token_id == g.token_id
        assert abs(s.logprob - g.logprob) < 1e-3
        assert [a.token_id for a in s.top] == [a.token_id for a in g.top]
    assert run(smol.score_prompt(france[:1], 2)) == [None]


def test_concurrent_requests_never_cross(smol):
    """40 concurrent requests with mixed sampling, some cancelled midway: every finished
    one gets exactly the tokens it gets when run alone."""
    prompts = [
        smol.render_chat([{"role": "user", "content": q}])
        for q in ["What is 2+2?", "Name a fruit.", "Say hello.", "What colour is the sky?", "Count to five."]
    ]
    configs = [
        dict(temperature=0),
        dict(temperature=0.8, seed=11),
        dict(temperature=1.0, top_p=0.9, seed=5, frequency_penalty=0.5),
        dict(temperature=0, presence_penalty=1.0, logit_bias=((28, -5.0),)),
    ]
    rng = random.Random(0)
    jobs = []
    for i in range(40):
        p, c = i % len(prompts), (i * 7) % len(configs)
        n = 2 if i % 9 == 0 and "seed" in configs[c] else 1
        jobs.append((i, p, c, n, i % 6 == 5))  # every 6th is cancelled after 2 deltas
    rng.shuffle(jobs)

    def make(i, p, c, n):
        return GenerationRequest(
            request_id=f"r{i}", prompt_token_ids=tuple(prompts[p]), n=n,
            sampling=SamplingParams(max_tokens=10, ignore_eos=True, **configs[c]),
        )

    async def one(i, p, c, n, cancel):
        if cancel:
            got = []
            agen = smol.generate(make(i, p, c, n))
            async for d in agen:
                got.append(d)
                if len(got) == 2:
                    break
            await agen.aclose()
            return None
        out = await collect(smol, make(i, p, c, n))
        return {k: ids_of(v) for k, v in out.items()}

    async def everything():
        return await asyncio.gather(*(one(*job) for job in jobs))

    results = run(asyncio.wait_for(everything(), 600))
    alone: dict[tuple[int, int, int], dict[int, list[int]]] = {}
    for (i, p, c, n, cancel), got in zip(jobs, results):
        if cancel:
            assert got is None
            continue
        key = (p, c, n)
        if key not in alone:
            ref = run(collect(smol, make(i, p, c, n)))
            alone[key] = {k: ids_of(v) for k, v in ref.items()}
        assert got == alone[key], f"request {i} differs from its solo run"
    assert_idle(smol.stats())
