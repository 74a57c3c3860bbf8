"""The engine on a GPU: the ``cuda`` tier (``python -m pytest -m cuda``), run on a machine
with an NVIDIA GPU. Where torch sees no CUDA device the tests skip and say so; CI has
none.

``GPT3DEV_TEST_DEVICE`` names the device (default ``cuda``). Set to ``cpu``, the same
checks run on the CPU, which is how they were written and checked on a machine without a
GPU; on a GPU they are the smoke test of the CUDA path: the bundled SmolLM2 loads there
in half precision, answers, streams, keeps each row's greedy answer whatever shares its
batch, and sizes its KV pool from the memory budget.
"""

from __future__ import annotations

import asyncio
import os

import pytest
import torch

from inference.engine import Engine, EngineConfig

from .helpers import FRANCE, assert_idle, collect, ids_of, req, run, smol_spec, text_of

DEVICE = os.environ.get("GPT3DEV_TEST_DEVICE", "cuda")
POOL_BYTES = 256 << 20

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.model,
    pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                       reason="no CUDA device here: the cuda tier runs on a machine with an NVIDIA GPU"),
]


@pytest.fixture(scope="module")
def device_engine(cache_dir):
    engine = Engine(EngineConfig(cache_dir=cache_dir, max_batch_size=16, kv_cache_memory=POOL_BYTES))
    yield engine
    engine.shutdown()


@pytest.fixture
def on_device(device_engine, smol_folder):
    # dtype "auto": bfloat16 or float16 on a GPU (float32 on the CPU).
    return device_engine.generator(smol_spec(id="smollm2-device", device=DEVICE, dtype="auto"))


def test_loads_on_the_device_in_the_devices_precision(on_device):
    params = list(on_device.model.parameters())
    assert {p.device.type for p in params} == {torch.device(DEVICE).type}
    floats = {p.dtype for p in params if p.is_floating_point()}
    if DEVICE.startswith("cuda"):
        assert floats <= {torch.bfloat16, torch.float16}, floats
    stats = on_device.stats()
    # The pool was sized from the budget: no more bytes than asked for, and room for a few thousand tokens.
    assert 0 < stats["kv_bytes_total"] <= POOL_BYTES
    assert stats["kv_tokens_total"] >= 2048


def test_answers_and_streams_token_by_token(on_device):
    prompt = on_device.render_chat(FRANCE)
    deltas = run(collect(on_device, req(prompt, "france", max_tokens=16, temperature=0)))[0]
    assert "Paris" in text_of(deltas)
    assert len(deltas) >= 4  # several pieces, not one answer at the end
    assert deltas[-1].finish_reason in ("stop", "length")


def test_a_rows_greedy_answer_does_not_depend_on_its_batch(on_device):
    questions = ["What is 2+2?", "Name a fruit.", "Say hello.", "What colour is the sky?", "Count to five.",
                 "What is the capital of Italy?", "Name an animal.", "Spell cat."]
    prompts = [on_device.render_chat([{"role": "user", "content": q}]) for q in questions]
    greedy = dict(max_tokens=12, temperature=0, ignore_eos=True)
    alone = [ids_of(run(collect(on_device, req(p, f"alone{i}", **greedy)))[0]) for i, p in enumerate(prompts)]

    async def together():
        return await asyncio.gather(*(collect(on_device, req(p, f"batch{i}", **greedy)) for i, p in enumerate(prompts)))

    batched = [ids_of(out[0]) for out in run(together())]
    assert batched == alone
    assert_idle(on_device.stats())
