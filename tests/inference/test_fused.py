"""Fused RMSNorm: the same float32 logits as transformers' own norm, in fewer ops."""

from __future__ import annotations

import pytest
import torch

from inference import fused


def _padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    ids = torch.randint(100, 5000, (3, 20))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # a left-padded row, as the scheduler batches them
    return ids, mask


@pytest.mark.model
def test_fused_norms_give_bit_identical_logits(smol_folder):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(smol_folder), dtype=torch.float32).eval()
    ids, mask = _padded_batch()
    with torch.inference_mode():
        before = model(input_ids=ids, attention_mask=mask).logits
        assert fused.fuse_norms(model) == 61  # 2 per layer x 30, and the final norm
        after = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(before, after)


def test_bfloat16_norms_are_left_alone(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.bfloat16)
    assert fused.fuse_norms(model) == 0
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    assert fused.fuse_norms(model) == 5
    assert not any(type(m).__name__ == "LlamaRMSNorm" for m in model.modules())
