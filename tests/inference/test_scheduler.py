"""Continuous-batching scheduler mechanics on a tiny random-weight Llama (fast; the
text is gibberish, only the mechanics are checked). Results that users see are
checked with the real SmolLM2 in test_generation.py."""

from __future__ import annotations

import asyncio

import pytest

from inference.engine import Engine, EngineConfig
from inference.errors import EngineOverloaded, InvalidInput

from .helpers import assert_idle, collect, ids_of, req, run, tiny_spec

PROMPT = [504, 3575, 282, 4649, 314]  # any in-vocabulary ids


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory):
    eng = Engine(EngineConfig(cache_dir=tmp_path_factory.mktemp("cache"), max_batch_size=4, max_queue=8))
    yield eng
    eng.shutdown()


@pytest.fixture(scope="module")
def tiny(tiny_engine, tiny_llama_dir):
    return tiny_engine.generator(tiny_spec(tiny_llama_dir))


def test_each_sequence_ends_once_with_length(tiny):
    out = run(collect(tiny, req(PROMPT, n=3, max_tokens=7, temperature=0.9, seed=3, ignore_eos=True)))
    assert sorted(out) == [0, 1, 2]
    for deltas in out.values():
        assert [d.finish_reason for d in deltas].count("length") == 1
        assert deltas[-1].finish_reason == "length"
        assert len(ids_of(deltas)) == 7


def test_n_greedy_sequences_share_prefill_and_agree(tiny):
    out = run(collect(tiny, req(PROMPT, n=3, max_tokens=6, temperature=0, ignore_eos=True)))
    assert ids_of(out[0]) == ids_of(out[1]) == ids_of(out[2])


def test_join_mid_batch(tiny):
    """A short request submitted while a long one decodes finishes first: it joined the
    running batch instead of waiting for it to drain."""

    async def scenario():
        order = []
        long_gen = tiny.generate(req(PROMPT, "long", max_tokens=150, temperature=0, ignore_eos=True))
        first = await long_gen.__anext__()
        assert first.token_ids
        running_seen = []

        async def drain_long():
            async for d in long_gen:
                if d.finish_reason:
                    order.append("long")

        async def short():
            async for d in tiny.generate(req(PROMPT[:3], "short", max_tokens=5, temperature=0, ignore_eos=True)):
                running_seen.append(tiny.stats()["running"])
                if d.finish_reason:
                    order.append("short")

        await asyncio.gather(drain_long(), short())
        return order, running_seen

    order, running_seen = run(asyncio.wait_for(scenario(), 120))
    assert order == ["short", "long"]
    assert max(running_seen) == 2


def test_cancel_frees_slot(tiny_llama_dir, tmp_path):
    eng = Engine(EngineConfig(cache_dir=tmp_path, max_batch_size=1, max_queue=4))
    gen = eng.generator(tiny_spec(tiny_llama_dir))

    async def scenario():
        g = gen.generate(req(PROMPT, "a", max_tokens=400, temperature=0, ignore_eos=True))
        got = [await g.__anext__() for _ in range(3)]
        await g.aclose()  # consumer goes away mid-sequence
        # The only slot must be free again: this would never finish otherwise.
        out = await collect(gen, req(PROMPT, "b", max_tokens=4, temperature=0, ignore_eos=True))
        return got, out

    try:
        got, out = run(asyncio.wait_for(scenario(), 120))
        assert all(d.finish_reason is None for d in got)
        assert len(ids_of(out[0])) == 4
        assert_idle(gen.stats())
    finally:
        eng.shutdown()


def test_task_cancellation_stops_request(tiny):
    async def scenario():
        seen = []

        async def consume():
            async for d in tiny.generate(req(PROMPT, "c", max_tokens=400, temperature=0, ignore_eos=True)):
                seen.append(d)

        task = asyncio.create_task(consume())
        while len(seen) < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        while tiny.stats()["running"]:
            await asyncio.sleep(0.01)
        return seen

    seen = run(asyncio.wait_for(scenario(), 120))
    assert all(d.finish_reason is None for d in seen)


def test_queue_full_raises_overloaded_before_yielding(tiny_llama_dir, tmp_path):
    eng = Engine(EngineConfig(cache_dir=tmp_path, max_batch_size=1, max_queue=1))
    gen = eng.generator(tiny_spec(tiny_llama_dir))

    async def scenario():
        a = gen.generate(req(PROMPT, "a", max_tokens=400, temperature=0, ignore_eos=True))
        await a.__anext__()  # a occupies the only slot
        b_out = []

        async def consume_b():
            async for d in gen.generate(req(PROMPT, "b", max_tokens=3, temperature=0, ignore_eos=True)):
                b_out.append(d)

        b_task = asyncio.create_task(consume_b())
        while gen.stats()["waiting"] < 1:
            await asyncio.sleep(0.01)
        c = gen.generate(req(PROMPT, "c", max_tokens=3))
        with pytest.raises(EngineOverloaded):
            await c.__anext__()
        await a.aclose()
        await b_task
        return b_out

    try:
        b_out = run(asyncio.wait_for(scenario(), 120))
        assert b_out[-1].finish_reason == "length"
    finally:
        eng.shutdown()


@pytest.mark.parametrize(
    "kwargs, param, code",
    [
        (dict(ids=[10**6]), "prompt", None),
        (dict(ids=[-1]), "prompt", None),
        (dict(ids=PROMPT, max_tokens=600), "prompt", "context_length_exceeded"),
        (dict(ids=PROMPT, logit_bias=((10**7, 1.0),)), "logit_bias", None),
    ],
)
def test_invalid_input_is_rejected_not_crashing(tiny, kwargs, param, code):
    ids = kwargs.pop("ids")

    async def scenario():
        with pytest.raises(InvalidInput) as info:
            await collect(tiny, req(ids, **kwargs))
        return info.value

    err = run(scenario())
    assert err.param == param and err.code == code
    # and the worker still serves requests
    assert len(ids_of(run(collect(tiny, req(PROMPT, max_tokens=2, ignore_eos=True)))[0])) == 2


def test_max_tokens_zero_finishes_immediately(tiny):
    out = run(collect(tiny, req(PROMPT, n=2, max_tokens=0)))
    assert [d.finish_reason for d in out[0]] == ["length"] and out[1][0].text == ""


def test_score_prompt_runs_on_worker(tiny):
    lps = run(tiny.score_prompt(PROMPT, 3))
    assert lps[0] is None and len(lps) == len(PROMPT)
    assert all(lp.token_id == t and len(lp.top) == 3 and lp.logprob <= 0 for lp, t in zip(lps[1:], PROMPT[1:]))


def test_shutdown_fails_in_flight_requests_instead_of_hanging(tiny_llama_dir, tmp_path):
    from inference.errors import ModelUnavailable

    eng = Engine(EngineConfig(cache_dir=tmp_path, max_batch_size=2))
    gen = eng.generator(tiny_spec(tiny_llama_dir))

    async def scenario():
        agen = gen.generate(req(PROMPT, "a", max_tokens=400, temperature=0, ignore_eos=True))
        await agen.__anext__()
        await asyncio.get_running_loop().run_in_executor(None, eng.shutdown)
        with pytest.raises(ModelUnavailable):
            async for _ in agen:
                pass
        with pytest.raises(ModelUnavailable):
            eng.generator(tiny_spec(tiny_llama_dir))

    run(asyncio.wait_for(scenario(), 120))
    assert eng.loaded_models() == []
