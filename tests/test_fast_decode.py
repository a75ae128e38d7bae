"""The lean Llama decoder gives the numbers of the model's own forward pass, and steps aside when it cannot."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from base_policy.fast_decode import _Packed, llama_decoder
from base_policy.sampling import Bf16Weights, position_ids, sample_tokens


def tiny_llama(**extra):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, **extra,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def prompts():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 97, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding, as generation and rollouts pad
    mask[1, :1] = 0
    return ids, mask


def decoded_logits(lm, ids, mask, tokens):
    """Logits the decoder gives after the prompt and after each of ``tokens`` (B, T) fed back: (B, T+1, V)."""
    dec = llama_decoder(lm, ids.shape[0], ids.shape[1] + tokens.shape[1] + 1)
    pos = position_ids(mask)
    out = [dec.head(dec.prefill(ids, mask, pos))]
    nxt = pos[:, -1] + 1
    for t in range(tokens.shape[1]):
        out.append(dec.head(dec.step(tokens[:, t], nxt)))
        nxt = nxt + 1
    return torch.stack(out, 1)


def full_logits(lm, ids, mask, tokens):
    """The same logits from one forward pass of the HF model over prompt + tokens."""
    all_ids = torch.cat([ids, tokens], 1)
    attn = torch.cat([mask, torch.ones_like(tokens)], 1)
    with torch.no_grad():
        logits = lm(input_ids=all_ids, attention_mask=attn, position_ids=position_ids(attn)).logits.float()
    return logits[:, ids.shape[1] - 1 :]


@pytest.mark.parametrize(
    "extra", [{}, {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}], ids=["rope", "scaled"]
)
def test_decoder_logits_equal_the_model_forward_in_float32(extra):
    lm = tiny_llama(**extra)
    ids, mask = prompts()
    tokens = torch.randint(0, 97, (3, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = decoded_logits(lm, ids, mask, tokens)
    want = full_logits(lm, ids, mask, tokens)
    real = torch.ones(3, 7, dtype=torch.bool)
    torch.testing.assert_close(got[real], want[real], rtol=1e-4, atol=1e-5)


def test_decoder_logits_under_bf16_autocast_stay_within_bf16_rounding():
    lm = tiny_llama()
    ids, mask = prompts()
    tokens = torch.randint(0, 97, (3, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = decoded_logits(lm, ids, mask, tokens)
    want = full_logits(lm, ids, mask, tokens)
    assert (got - want).abs().max() < 0.05 * want.abs().max()
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_fast_sampling_draws_the_same_tokens_as_the_plain_path():
    lm = tiny_llama()
    ids, mask = prompts()

    def draw(fast):
        return sample_tokens(
            lm, ids, mask, max_new_tokens=12, eos_id=5, generator=torch.Generator().manual_seed(3), fast=fast
        )

    (tok_fast, m_fast), (tok_plain, m_plain) = draw(True), draw(False)
    assert torch.equal(tok_fast, tok_plain) and torch.equal(m_fast, m_plain)


def test_frozen_weights_are_packed_once_and_repacked_after_an_update():
    lm = tiny_llama()
    for p in lm.parameters():
        p.requires_grad_(False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first, second = llama_decoder(lm, 3, 16), llama_decoder(lm, 3, 16)
    assert all(
        a is b for a, b in zip(first.w_qkv + first.w_gu + [first.w_head], second.w_qkv + second.w_gu + [second.w_head])
    )
    ids, mask = prompts()
    tokens = torch.randint(0, 97, (3, 4), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        lm.model.layers[2].mlp.up_proj.weight.mul_(3.0)  # an optimiser step changes a weight in place
        got = decoded_logits(lm, ids, mask, tokens)
    assert llama_decoder(lm, 3, 16).w_gu[2] is not first.w_gu[2]
    torch.testing.assert_close(got, full_logits(lm, ids, mask, tokens), rtol=1e-4, atol=1e-5)


def test_a_packed_weight_serves_any_number_of_rows():
    w = torch.randn(48, 32)
    packed = _Packed(w, torch.bfloat16, batch=16)
    for rows in (1, 3, 16, 40):
        x = torch.randn(rows, 32).bfloat16()
        torch.testing.assert_close(packed(x).float(), F.linear(x, w.bfloat16()).float(), rtol=2e-2, atol=2e-2)


def test_other_models_and_wrapped_layers_use_the_model_forward():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=2))
    assert llama_decoder(gpt2, 2, 8) is None
    lm = tiny_llama()
    assert llama_decoder(lm, 2, 8) is not None
    handle = lm.model.layers[1].self_attn.register_forward_hook(lambda *a: None)
    assert llama_decoder(lm, 2, 8) is None  # a hook inside a layer would not see the decoder's work
    handle.remove()
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert llama_decoder(lora.base_model.model, 2, 8) is None  # adapters: their own forward


def test_a_layer_hook_sees_the_prompt_pass_as_the_model_forward_gives_it():
    lm = tiny_llama()
    ids, mask = prompts()
    seen = []
    handle = lm.model.layers[1].register_forward_hook(
        lambda _m, _a, out: seen.append(out[0] if isinstance(out, tuple) else out)
    )
    try:
        with torch.no_grad():
            llama_decoder(lm, 3, 8).prefill(ids, mask, position_ids(mask))
            lm(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask))
    finally:
        handle.remove()
    got, want = seen
    real = mask.bool()  # padding positions differ (each attends to itself only) and are never read
    torch.testing.assert_close(got[real], want[real], rtol=1e-4, atol=1e-5)


def test_sampling_a_decodable_model_swaps_in_no_bf16_copies():
    from transformers import GPT2Config, GPT2LMHeadModel

    lm = tiny_llama()
    weights = Bf16Weights(enabled=True)
    ids, mask = prompts()
    with torch.autocast("cpu", dtype=torch.bfloat16), weights.sampling(lm):
        assert lm.model.layers[0].mlp.up_proj.weight.dtype == torch.float32  # the decoder packs its own copy
        sample_tokens(lm, ids, mask, max_new_tokens=3)
    assert not weights._frozen
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=2)).eval()
    with weights.sampling(gpt2):  # the HF path: the copies are what makes it fast
        assert gpt2.transformer.h[0].mlp.c_fc.weight.dtype == torch.bfloat16
    assert gpt2.transformer.h[0].mlp.c_fc.weight.dtype == torch.float32
