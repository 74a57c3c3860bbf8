"""Weight-only int8/int4 layers: numerics against float32, the cached conversion, the
engine's dtype handling, and the bundled SmolLM2 served in int8 and int4."""

from __future__ import annotations

import logging

import pytest
import torch

from inference import loading, quant
from inference.engine import Engine, EngineConfig
from inference.errors import ModelUnavailable
from inference.types import GenerationRequest, SamplingParams

from .helpers import collect, ids_of, run, smol_spec, text_of, tiny_spec


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


@pytest.mark.parametrize("rows", [1, 3, 17])
def test_int8_and_int4_linears_match_float32(rows):
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 160, bias=True)
    x = torch.randn(2, rows, 96)
    want = linear(x).detach()
    q8, s8 = quant.quantize_int8_rows(linear.weight)
    q4, sm4 = quant.quantize_int4_groups(linear.weight)
    int8 = quant.Int8Linear(q8, s8, linear.bias.detach())
    int4 = quant.Int4Linear(q4, sm4, linear.bias.detach())
    assert int8(x).shape == int4(x).shape == want.shape
    assert int8(x).dtype == int4(x).dtype == torch.float32
    assert _relative_error(int8(x), want) < 0.02
    assert _relative_error(int4(x), want) < 0.15


def test_int4_groups_reproduce_q4_1_weights_exactly():
    """A weight whose groups of 32 already hold 16 evenly spaced levels (what a GGUF Q4_1
    block dequantises to) comes back unchanged: the bundled Q4_1 model loses nothing."""
    torch.manual_seed(0)
    codes = torch.randint(0, 16, (8, 64)).float()
    codes[:, ::32] = 0
    codes[:, 1::32] = 15  # every group spans the full code range, as llama.cpp's quantiser makes it
    scale, low = torch.rand(8, 2, 1) * 0.1, torch.randn(8, 2, 1)
    weight = (codes.reshape(8, 2, 32) * scale + low).reshape(8, 64)
    packed, scale_min = quant.quantize_int4_groups(weight)
    codes_back = quant._unpack_nibbles(packed).float().reshape(8, 2, 32)
    back = (codes_back * scale_min[..., :1] + scale_min[..., 1:]).reshape(8, 64)
    assert torch.allclose(back, weight, atol=1e-6)


def test_rows_do_not_depend_on_the_batch():
    """Each row of a quantized matmul comes out the same whatever else is in the batch."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(576, 1536, bias=False)
    layers = [
        quant.Int8Linear(*quant.quantize_int8_rows(linear.weight), None),
        quant.Int4Linear(*quant.quantize_int4_groups(linear.weight), None),
    ]
    x = torch.randn(40, 576)
    for layer in layers:
        for rows in (2, 5, 16, 40):
            batched = layer(x[:rows])
            for i in range(rows):
                assert torch.equal(layer(x[i : i + 1]), batched[i : i + 1])


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_tiny_model_quantized_once_into_the_cache(tiny_llama_dir, tmp_path, monkeypatch, scheme):
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32).eval()
    model = quant.load_quantized_model(tiny_llama_dir, scheme, tmp_path, dtype=torch.float32)
    entry = quant.cached_quantization(tiny_llama_dir, scheme, tmp_path)
    assert entry is not None and entry.parent == tmp_path and entry.name.endswith(f".{scheme}")
    assert quant.weight_format(model) == scheme
    assert not [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    assert isinstance(head, quant.Float16Head) and isinstance(embed, quant.Float16Embedding)
    assert head.weight is embed.weight and head.weight.dtype == torch.float16  # tied: one float16 table
    assert quant.activation_dtype(model) == torch.float32  # the residual stream stays float32
    x = torch.tensor([[1, 20, 300, 4000, 50]])
    with torch.no_grad():
        want, got = ref(x).logits, model(x).logits
    assert _relative_error(got, want) < (0.05 if scheme == "int8" else 0.2)

    def must_not_quantize(*args, **kwargs):
        raise AssertionError("quantized again although the cache holds this model")

    monkeypatch.setattr(quant, "write_quantization", must_not_quantize)
    again = quant.load_quantized_model(tiny_llama_dir, scheme, tmp_path, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(again(x).logits, got)


def test_quantizing_says_what_each_phase_is_doing(tiny_llama_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="inference.quant")
    quant.load_quantized_model(tiny_llama_dir, "int8", tmp_path, dtype=torch.float32)
    lines = [r.getMessage() for r in caplog.records if r.name == "inference.quant"]
    assert lines[0].startswith(f"quantizing {tiny_llama_dir} to int8 in {tmp_path}")
    for what in ("reading the float32 weights to quantize", "writing the int8 weights", "loading the int8 weights"):
        started = [i for i, line in enumerate(lines) if line.startswith(what) and line.endswith(" ...")]
        ended = [i for i, line in enumerate(lines) if line.startswith(what) and ": done in " in line]
        assert len(started) == 1 and len(ended) == 1 and started[0] < ended[0], (what, lines)
    caplog.clear()
    quant.load_quantized_model(tiny_llama_dir, "int8", tmp_path, dtype=torch.float32)
    again = [r.getMessage() for r in caplog.records if r.name == "inference.quant"]
    assert [line.split(" ")[0] for line in again] == ["loading", "loading"], again  # cached: only the load


def test_engine_serves_int8_and_refuses_it_where_it_cannot(tiny_llama_dir, tmp_path):
    eng = Engine(EngineConfig(cache_dir=tmp_path))
    try:
        gen = eng.generator(tiny_spec(tiny_llama_dir, dtype="int8"))
        assert gen.weight_format == "int8"
        request = GenerationRequest(
            request_id="q", prompt_token_ids=(1, 20, 300),
            sampling=SamplingParams(max_tokens=4, temperature=0, ignore_eos=True),
        )
        assert len(ids_of(run(collect(gen, request))[0])) == 4
        embed_spec = tiny_spec(tiny_llama_dir, id="e", dtype="int8")
        with pytest.raises(ModelUnavailable, match="text-generation models only"):
            eng.embedder(type(embed_spec)(**{**embed_spec.__dict__, "task": "embeddings"}))
    finally:
        eng.shutdown()
    with pytest.raises(ModelUnavailable, match="CPU weight format"):
        loading.weight_scheme("int4", torch.device("cuda"))
    assert loading.weight_scheme("auto", torch.device("cpu"), cpu_auto="int8") == "int8"
    assert loading.weight_scheme("auto", torch.device("cuda"), cpu_auto="int8") is None
    assert loading.choose_dtype("int8", torch.device("cpu")) == torch.float32


@pytest.mark.model
@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_smollm2_quantized_answers_and_int8_is_batch_invariant(engine, scheme):
    """The bundled chat model in int8/int4: a fraction of float32's weight memory and the
    right answer; in int8, greedy rows come out the same alone and batched. (int4 is not
    batch-invariant: one of these five differed, although its kernel computes each row
    alike in isolation; docs/models.md says so.)"""
    gen = engine.generator(smol_spec(id=f"smol-{scheme}", dtype=scheme))
    assert gen.weight_format == scheme
    size = sum(t.numel() * t.element_size() for t in [*gen.model.parameters(), *gen.model.buffers()])
    # float32 SmolLM2 is 540 MB, 113 MB of it the (float32, tied) embedding table
    assert size < 540e6 * (0.45 if scheme == "int8" else 0.35)

    def ask(question: str, request_id: str) -> GenerationRequest:
        ids = gen.render_chat([{"role": "user", "content": question}])
        return GenerationRequest(
            request_id=request_id, prompt_token_ids=tuple(ids),
            sampling=SamplingParams(max_tokens=12, temperature=0, ignore_eos=True),
        )

    answer = text_of(run(collect(gen, ask("What is the capital of France?", "fr")))[0])
    assert "Paris" in answer
    if scheme != "int8":
        return
    questions = ["What is 2+2?", "Name a fruit.", "Say hello.", "What colour is the sky?", "Count to five."]
    alone = [run(collect(gen, ask(q, f"a{i}")))[0] for i, q in enumerate(questions)]

    async def together():
        import asyncio

        return await asyncio.gather(*(collect(gen, ask(q, f"b{i}")) for i, q in enumerate(questions)))

    batched = [out[0] for out in run(together())]
    assert [ids_of(x) for x in batched] == [ids_of(x) for x in alone]
