"""The scheduler over the KV pool, on a tiny random-weight Llama (mechanics only; the
real model's answers are checked in test_generation.py): chunked prefill keeps running
streams flowing, a full pool preempts and resumes without changing answers, prefixes
are reused and reported, admission lets narrow requests overtake wide ones for a
bounded time, and models the pool cannot serve are refused at load."""

from __future__ import annotations

import asyncio

import pytest

from inference.engine import Engine, EngineConfig
from inference.errors import InvalidInput, ModelUnavailable

from .helpers import assert_idle, collect, ids_of, req, run, tiny_spec

PROMPT = [504, 3575, 282, 4649, 314]
LONG = [(i * 37 + 11) % 4000 + 100 for i in range(200)]  # any in-vocabulary ids


def make(tmp_path, folder, **config):
    config.setdefault("max_batch_size", 4)
    eng = Engine(EngineConfig(cache_dir=tmp_path, **config))
    return eng, eng.generator(tiny_spec(folder))


def greedy(ids, rid="r", max_tokens=8, **kw):
    return req(ids, rid, max_tokens=max_tokens, temperature=0, ignore_eos=True, **kw)


def test_chunked_prefill_keeps_streams_flowing_and_answers_unchanged(tiny_llama_dir, tmp_path):
    whole_eng, whole = make(tmp_path, tiny_llama_dir)  # the 200-token prompt in one step
    eng, gen = make(tmp_path, tiny_llama_dir, max_step_tokens=16)

    async def scenario():
        reference = ids_of((await collect(whole, greedy(LONG, "ref")))[0])
        stream = gen.generate(greedy(PROMPT, "a", max_tokens=200))
        await stream.__anext__()
        long_task = asyncio.create_task(collect(gen, greedy(LONG, "long")))
        during = 0
        async for _ in stream:
            if long_task.done():
                break
            during += 1
        await stream.aclose()
        long_ids = ids_of((await long_task)[0])
        while gen.stats()["running"]:  # the closed stream leaves at the next step
            await asyncio.sleep(0.01)
        return reference, long_ids, during

    try:
        reference, chunked, during = run(asyncio.wait_for(scenario(), 120))
        assert chunked == reference
        # 200 prompt tokens in steps of at most 15 (one token goes to the stream): the
        # running stream got a token in each of those steps instead of waiting.
        assert during >= 10
        assert_idle(gen.stats())
    finally:
        eng.shutdown()
        whole_eng.shutdown()


def test_full_pool_preempts_and_resumes_with_the_same_answers(tiny_llama_dir, tmp_path):
    # 2 layers x 2 KV heads x 16 dims x 4 bytes x K,V = 512 bytes a token: 128 tokens.
    eng, gen = make(tmp_path, tiny_llama_dir, kv_cache_memory=128 * 512)
    assert gen.context_length == 128

    async def scenario():
        alone = [ids_of((await collect(gen, greedy(PROMPT[: 2 + i], f"s{i}", max_tokens=90)))[0]) for i in range(3)]
        together = await asyncio.gather(
            *(collect(gen, greedy(PROMPT[: 2 + i], f"t{i}", max_tokens=90)) for i in range(3)))
        return alone, [ids_of(t[0]) for t in together]

    try:
        alone, together = run(asyncio.wait_for(scenario(), 120))
        assert together == alone
        stats = gen.stats()
        assert stats["preemptions"] > 0 and stats["kv_tokens_total"] == 128
        assert_idle(stats)
    finally:
        eng.shutdown()


def test_prompt_beyond_the_pool_is_refused_stating_the_limit(tiny_llama_dir, tmp_path):
    eng, gen = make(tmp_path, tiny_llama_dir, kv_cache_memory=128 * 512)
    try:
        with pytest.raises(InvalidInput) as info:
            run(collect(gen, greedy(LONG)))
        assert info.value.code == "context_length_exceeded"
        assert "128 tokens" in str(info.value) and "KV cache" in str(info.value)
    finally:
        eng.shutdown()


def test_prefix_reused_and_reported(tiny_llama_dir, tmp_path):
    eng, gen = make(tmp_path, tiny_llama_dir)

    async def scenario():
        first = await collect(gen, greedy(LONG[:64], "a"))
        second = await collect(gen, greedy(LONG[:64], "b", n=2))
        return first, second

    try:
        first, second = run(asyncio.wait_for(scenario(), 120))
        assert first[0][0].cached_tokens == 0
        # Whole 16-token blocks, leaving the last prompt token to compute.
        assert [second[i][0].cached_tokens for i in (0, 1)] == [48, 48]
        assert ids_of(second[0]) == ids_of(second[1]) == ids_of(first[0])
        stats = gen.stats()
        assert stats["prefix_cache_hits"] == 48 and stats["prefix_cache_queries"] == 128
        assert stats["kv_tokens_cached"] > 0
    finally:
        eng.shutdown()


async def _first_delta_order(gen, wide_n: int, order: list[str]):
    async def run_one(name, request):
        async for _delta in gen.generate(request):
            if name not in order:
                order.append(name)

    longs = [gen.generate(greedy(PROMPT, f"long{i}", max_tokens=400)) for i in range(3)]
    for s in longs:
        await s.__anext__()
    wide = asyncio.create_task(run_one("wide", greedy(PROMPT, "wide", n=wide_n, max_tokens=3)))
    while gen.stats()["waiting"] < wide_n:
        await asyncio.sleep(0.005)
    narrow = asyncio.create_task(run_one("narrow", greedy(PROMPT, "narrow", max_tokens=3)))
    for _ in range(30):  # let the long streams run a while
        for s in longs:
            await s.__anext__()
    order.append("longs-end")
    for s in longs:
        await s.aclose()
    await asyncio.gather(wide, narrow)
    while gen.stats()["running"]:
        await asyncio.sleep(0.01)


def test_narrow_request_overtakes_a_wide_one_that_does_not_fit(tiny_llama_dir, tmp_path):
    eng, gen = make(tmp_path, tiny_llama_dir)
    order: list[str] = []
    try:
        run(asyncio.wait_for(_first_delta_order(gen, 4, order), 120))
        assert order == ["narrow", "longs-end", "wide"]
        assert_idle(gen.stats())
    finally:
        eng.shutdown()


def test_a_wide_request_skipped_long_enough_is_not_overtaken(tiny_llama_dir, tmp_path):
    eng, gen = make(tmp_path, tiny_llama_dir, max_skip_s=0.0)
    order: list[str] = []
    try:
        run(asyncio.wait_for(_first_delta_order(gen, 4, order), 120))
        assert order == ["longs-end", "wide", "narrow"]
    finally:
        eng.shutdown()


def test_more_sequences_than_the_queue_holds_is_invalid_not_overloaded(tiny_llama_dir, tmp_path):
    eng, gen = make(tmp_path, tiny_llama_dir, max_queue=8)
    try:
        gen.check_total(8)
        with pytest.raises(InvalidInput) as info:
            gen.check_total(9)
        assert info.value.param == "n" and "at most 8" in str(info.value)
    finally:
        eng.shutdown()


def test_sliding_window_model_refused_at_load(tmp_path, smol_folder):
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(smol_folder))
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, use_sliding_window=True, sliding_window=32,
        max_window_layers=0,
    )
    folder = tmp_path / "swa"
    Qwen2ForCausalLM(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    eng = Engine(EngineConfig(cache_dir=tmp_path / "cache"))
    try:
        with pytest.raises(ModelUnavailable) as info:
            eng.generator(tiny_spec(folder, id="swa"))
        assert "sliding" in str(info.value) and "full-attention" in str(info.value)
    finally:
        eng.shutdown()


def test_prompts_alone_are_read_in_big_steps_and_small_ones_while_a_stream_decodes(tiny_llama_dir, tmp_path):
    eng, gen = make(tmp_path, tiny_llama_dir, max_step_tokens=16, max_prefill_tokens=64)
    sizes: list[list[int]] = []  # the tokens each row fed, per forward
    scheduler = gen._scheduler
    forward = scheduler._forward
    scheduler._forward = lambda plan: (sizes.append([take for _, take in plan]), forward(plan))[1]

    async def scenario():
        await collect(gen, greedy(LONG, "alone", max_tokens=1))
        alone = list(sizes)
        sizes.clear()
        stream = gen.generate(greedy(PROMPT, "a", max_tokens=200))
        await stream.__anext__()
        await collect(gen, greedy(LONG[::-1], "beside", max_tokens=1))  # not in the prefix cache
        await stream.aclose()
        return alone, list(sizes)

    try:
        alone, beside = run(asyncio.wait_for(scenario(), 120))
        assert [sum(step) for step in alone] == [64, 64, 64, 8]  # 200 tokens, nobody decoding
        prefill_steps = [step for step in beside if len(step) == 2]  # the stream's token and a chunk
        assert prefill_steps and all(sum(step) <= 16 for step in prefill_steps)
        assert sum(step[1] for step in prefill_steps) >= 199
        # Deeper into the prompt each chunk token attends to more context (the tiny
        # model's projections cost as much as attention over 288 tokens): chunks shrink,
        # so the stream's steps do not grow slower as the prompt is read.
        chunks = [step[1] for step in prefill_steps]
        assert chunks[0] == 15 and max(chunks[len(chunks) // 2 :]) < chunks[0]
        assert gen._scheduler.attention_span == 288
    finally:
        eng.shutdown()
