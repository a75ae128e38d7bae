"""The policy wrapper and the sampler against plain transformers: same logits, left padding harmless,
KV-cache sampling consistent with a full forward pass, value head at zero, bottom layers frozen."""

from __future__ import annotations

import torch

from rl_finetune.ppo.config import GenKwargs
from rl_finetune.ppo.rollout import left_pad, position_ids, sample
from rl_finetune.value_head import PolicyWithValueHead, freeze_bottom


def tiny(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def test_wrapper_logits_match_the_plain_model_and_values_start_at_zero(tiny_policy_dir):
    lm = tiny(tiny_policy_dir)
    pol = PolicyWithValueHead(lm)
    ids = torch.tensor([[10, 20, 30, 40, 50]])
    mask = torch.ones_like(ids)
    logits, values = pol(ids, mask, position_ids(mask), start=2)
    ref = lm(ids).logits[:, 2:-1]
    assert logits.shape == ref.shape == (1, 2, lm.config.vocab_size)
    assert torch.allclose(logits, ref, atol=1e-5)
    assert torch.count_nonzero(values) == 0


def test_left_padding_does_not_change_the_logits(tiny_policy_dir):
    pol = PolicyWithValueHead(tiny(tiny_policy_dir))
    b = left_pad([[11, 12, 13, 14], [21, 22]], pad_id=0, texts=["a", "b"])
    logits, _ = pol(b.input_ids, b.attention_mask, position_ids(b.attention_mask), start=0)
    alone = torch.tensor([[21, 22]])
    ref, _ = pol(alone, torch.ones_like(alone), position_ids(torch.ones_like(alone)), start=0)
    # row 1's last real position predicts the same next token distribution as the unpadded prompt
    assert torch.allclose(logits[1, -1], ref[0, -1], atol=1e-4)


def test_kv_cache_sampling_matches_a_full_forward(tiny_policy_dir):
    """Sampling with temperature -> 0 is greedy; its tokens must be the argmax of a full forward pass."""
    pol = PolicyWithValueHead(tiny(tiny_policy_dir))
    b = left_pad([[11, 12, 13], [21, 22]], pad_id=0, texts=["a", "b"])
    resp, mask = sample(
        pol,
        b,
        GenKwargs(max_new_tokens=5, temperature=1e-4, stop_at_eos=False),
        eos_id=None,
        pad_id=0,
        generator=torch.Generator().manual_seed(0),
    )
    ids = torch.cat([b.input_ids, resp], 1)
    attn = torch.cat([b.attention_mask, torch.ones_like(resp)], 1)
    logits, _ = pol(ids, attn, position_ids(attn), start=b.input_ids.shape[1] - 1)
    assert torch.equal(logits.argmax(-1), resp)
    assert mask.sum() == 10


def test_num_layers_unfrozen_trains_only_the_top_blocks(tiny_policy_dir):
    lm = tiny(tiny_policy_dir)
    n = freeze_bottom(lm, 1)
    trainable = {name for name, p in lm.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith(("transformer.h.1.", "transformer.ln_f.")) for name in trainable)
    assert n == sum(p.numel() for p in lm.parameters() if p.requires_grad)
    assert not lm.transformer.wte.weight.requires_grad
    lm2 = tiny(tiny_policy_dir)
    assert freeze_bottom(lm2, -1) == sum(p.numel() for p in lm2.parameters())
