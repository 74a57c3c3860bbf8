"""The engine's own decoder forward (inference.runner) against transformers' forward over
the same KV pool: the same numbers, and transformers' forward where the shape differs."""

from __future__ import annotations

import pytest
import torch

from inference import quant
from inference.engine import Engine, EngineConfig
from inference.kvcache import KVPool, pool_shape_of
from inference.loading import load_causal_lm
from inference.paged_attention import build_plan, register
from inference.runner import DecoderRunner, can_concat, concat_linears, runner_for, step_logits
from inference.types import GenerationRequest, SamplingParams

from .helpers import collect, ids_of, run, smol_spec, tiny_spec

CPU = torch.device("cpu")
BLOCK = 16
# (held, new) per step, for two rows in separate blocks: a prompt read whole, a chunk
# after cached tokens, then decode steps.
STEPS = [(0, 40), (40, 24), (64, 1), (65, 1)]


def _pool(model) -> KVPool:
    pool = KVPool(pool_shape_of(model.config, quant.activation_dtype(model)), num_blocks=32, block_size=BLOCK,
                  device=CPU)
    pool.keys.zero_(), pool.values.zero_()  # unwritten slots hold garbage; compare the pools whole
    return pool


def _both_ways(model) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each step's logits from transformers' forward and from the runner, on two pools."""
    model.set_attn_implementation(register())
    runner = runner_for(model)
    assert runner is not None
    pools = _pool(model), _pool(model)
    out = []
    with torch.inference_mode():
        for held, new in STEPS:
            spans = [(list(range(0, 8)), held, new), (list(range(16, 24)), held, new)]
            ids = [500 + i for i in range(new)] + [900 + i for i in range(new)]
            pos = list(range(held, held + new)) * 2
            keep = [new - 1, 2 * new - 1]
            got = [
                step_logits(model, r, ids, pos, build_plan(p.keys, p.values, BLOCK, spans), keep, CPU)
                for r, p in ((None, pools[0]), (runner, pools[1]))
            ]
            out.append((got[0], got[1]))
    assert torch.equal(pools[0].keys, pools[1].keys) and torch.equal(pools[0].values, pools[1].values)
    return out


@pytest.mark.model
def test_float32_runner_gives_transformers_logits_bit_for_bit(smol_folder, cache_dir):
    model = load_causal_lm(smol_folder, smol_spec(), CPU, cache_dir=cache_dir)
    for want, got in _both_ways(model):
        assert want.shape == got.shape == (2, model.config.vocab_size)
        assert torch.equal(want, got)


@pytest.mark.model
@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_quantized_projections_fuse_without_changing_a_number(smol_folder, cache_dir, scheme):
    model = load_causal_lm(smol_folder, smol_spec(dtype=scheme), CPU, cache_dir=cache_dir)
    attn = model.model.layers[0].self_attn
    x = torch.randn(5, model.config.hidden_size)
    with torch.inference_mode():
        before = torch.cat([attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)], dim=1)
        fused = concat_linears([attn.q_proj, attn.k_proj, attn.v_proj])
        assert type(fused) is type(attn.q_proj) and fused.out_features == before.shape[1]
        assert torch.equal(fused(x), before)
        # The original modules now read views of the fused weights: nothing held twice.
        assert attn.q_proj.weight.untyped_storage().data_ptr() == fused.weight.untyped_storage().data_ptr()
        assert torch.equal(torch.cat([attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)], dim=1), before)
    for want, got in _both_ways(load_causal_lm(smol_folder, smol_spec(dtype=scheme), CPU, cache_dir=cache_dir)):
        assert torch.equal(want, got)


def test_int4_rows_fuse_in_whole_blocks_only(tiny_llama_dir, tmp_path):
    """The tiny model's keys and values have 32 output rows, half of an int4 row block:
    its projections stay apart and transformers' forward serves it."""
    model = quant.load_quantized_model(tiny_llama_dir, "int4", tmp_path, dtype=torch.float32)
    attn = model.model.layers[0].self_attn
    assert not can_concat([attn.q_proj, attn.k_proj, attn.v_proj]) and runner_for(model) is None


def test_other_shapes_keep_transformers_forward(tmp_path_factory, smol_folder):
    """A GELU-gated Llama is not the runner's shape: the scheduler runs it through
    transformers' own forward, and it still generates."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(smol_folder))
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, hidden_act="gelu", bos_token_id=1, eos_token_id=2,
    )
    folder = tmp_path_factory.mktemp("gelu-llama")
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    eng = Engine(EngineConfig(cache_dir=tmp_path_factory.mktemp("cache")))
    try:
        gen = eng.generator(tiny_spec(folder, id="gelu"))
        assert not DecoderRunner.supports(gen.model) and gen._scheduler.runner is None
        request = GenerationRequest(request_id="g", prompt_token_ids=(1, 20, 300),
                                    sampling=SamplingParams(max_tokens=5, temperature=0, ignore_eos=True))
        assert len(ids_of(run(collect(gen, request))[0])) == 5
    finally:
        eng.shutdown()


def test_rows_in_consecutive_blocks_read_in_place_give_the_gathered_numbers(tiny_llama_dir, tmp_path):
    """A row whose blocks are consecutive is attended as a view of the pool; scattered
    blocks are gathered. Both give the same logits, bit for bit."""
    model = load_causal_lm(tiny_llama_dir, tiny_spec(tiny_llama_dir), CPU, cache_dir=tmp_path)
    model.set_attn_implementation(register())
    runner = runner_for(model)
    results = []
    for blocks in ([4, 5, 6, 7], [9, 2, 30, 11]):
        pool = _pool(model)
        plan_rows = []
        with torch.inference_mode():
            for held, new in [(0, 40), (40, 9), (49, 1)]:
                plan = build_plan(pool.keys, pool.values, BLOCK, [(blocks, held, new)])
                assert plan.rows[0].in_pool == (blocks == [4, 5, 6, 7])
                plan_rows.append(step_logits(model, runner, list(range(300, 300 + new)), list(range(held, held + new)),
                                             plan, [new - 1], CPU))
        results.append(plan_rows)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def _held_bytes(model) -> int:
    """Bytes of every distinct tensor storage the model holds (oneDNN's packed weights
    are opaque: counted at their element count)."""
    held = {}
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_mkldnn:
            held[id(t)] = t.numel() * t.element_size()
        else:
            held[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(held.values())


@pytest.mark.model
def test_float32_runner_packs_the_weights_in_place_and_keeps_the_answers(smol_folder, cache_dir):
    """The float32 runner computes on oneDNN-packed weights: transformers' modules are
    re-pointed at them (no projection weight is held twice; the tied head's table is,
    once), and the logits are MKL's within float32 rounding, with the same argmax."""
    from torch import nn

    from inference.packed import LinearSlice, PackedLinear

    plain = load_causal_lm(smol_folder, smol_spec(), CPU, cache_dir=cache_dir)
    model = load_causal_lm(smol_folder, smol_spec(), CPU, cache_dir=cache_dir)
    before = _held_bytes(model)
    runner = runner_for(model)
    assert runner is not None and runner_for(model) is runner  # built once per model
    attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    assert type(attn.q_proj) is LinearSlice and attn.q_proj.fused is runner.layers[0].qkv
    assert type(mlp.down_proj) is PackedLinear and type(model.lm_head) is PackedLinear
    assert not any(type(m) is nn.Linear for m in model.modules())
    head_bytes = model.config.vocab_size * model.config.hidden_size * 4
    assert _held_bytes(model) <= before + head_bytes + (1 << 20)
    ids = torch.tensor([1, 504, 3027, 314, 260, 2764, 282, 4649, 30], dtype=torch.long)
    with torch.inference_mode():
        want = plain(input_ids=ids[None], use_cache=False).logits[0]
        got = runner.head(runner.final_hidden(ids))
        via_transformers = model(input_ids=ids[None], use_cache=False).logits[0]
    assert torch.allclose(got, want, atol=2e-3, rtol=0)
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    assert torch.allclose(via_transformers, got, atol=1e-4, rtol=0)


@pytest.mark.model
def test_packed_rows_do_not_depend_on_how_many_rows_share_the_call(smol_folder, cache_dir):
    """A row's result is the same alone or among 600 others (what keeps greedy output
    independent of the batch)."""
    model = load_causal_lm(smol_folder, smol_spec(), CPU, cache_dir=cache_dir)
    runner = runner_for(model)
    linears = [runner.layers[0].qkv, runner.layers[0].gate_up, runner.layers[0].down, runner.head]
    torch.manual_seed(1)
    with torch.inference_mode():
        for linear in linears:
            x = torch.randn(600, linear.in_features)
            alone = torch.cat([linear(x[i : i + 1]) for i in range(0, 600, 37)])
            for rows in (2, 3, 8, 17, 64, 600):
                together = linear(x[:rows])
                picked = [i for i in range(0, 600, 37) if i < rows]
                assert torch.equal(together[picked], alone[: len(picked)]), (linear, rows)
        # the residual sums the runner asks oneDNN for: the same numbers as the two ops
        for linear in (runner.layers[0].o, runner.layers[0].down):
            x, residual = torch.randn(600, linear.in_features), torch.randn(600, linear.out_features)
            for rows in (1, 2, 17, 600):
                want = residual[:rows] + linear(x[:rows])
                assert torch.equal(linear.add_rows(x[:rows], residual[:rows]), want), (linear, rows)
            alone = torch.cat([linear.add_rows(x[i : i + 1], residual[i : i + 1]) for i in range(0, 600, 37)])
            assert torch.equal(linear.add_rows(x, residual)[::37], alone)
