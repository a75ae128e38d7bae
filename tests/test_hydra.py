"""The shared frozen trunk gives the same log-probs, values, reference and gradients as the plain path."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from rl_finetune.hydra import FrozenTrunk
from rl_finetune.ppo import core
from rl_finetune.value_head import PolicyWithValueHead, freeze_bottom


def tiny_gpt2(vocab_size: int = 97):
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=3, n_head=2))


def tiny_llama(vocab_size: int = 97, eos_token_id: int | None = None):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        eos_token_id=eos_token_id,
    )
    return LlamaForCausalLM(cfg)


def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 97, (3, 10), generator=g)
    attn = torch.ones_like(ids)
    attn[0, :3] = 0  # left padding, as in a rollout
    attn[1, :1] = 0
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": attn, "position_ids": pos}, ids[:, 5:]


def with_bumped_top(policy: PolicyWithValueHead):
    """Pretend training moved the trainable blocks (so policy and reference differ)."""
    with torch.no_grad():
        for p in policy.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
@pytest.mark.parametrize("unfrozen", [1, 0])
def test_shared_trunk_equals_plain_path(make, unfrozen):
    torch.manual_seed(0)
    lm = make().eval()
    plain_ref = copy.deepcopy(lm).eval()  # what the trainer keeps without a shared trunk
    freeze_bottom(lm, unfrozen)
    policy = PolicyWithValueHead(lm)
    trunk = FrozenTrunk(lm, unfrozen)
    with torch.no_grad():
        policy.v_head.weight.normal_()  # a non-zero value head, so values are compared for real
    with_bumped_top(policy)
    inputs, response = batch()
    start = 4

    logits, values = policy(**inputs, start=start)
    h = trunk.hidden(**inputs)
    with trunk.replay(h):
        logits_h, values_h = policy(**inputs, start=start)
    torch.testing.assert_close(logits_h, logits)
    torch.testing.assert_close(values_h, values)
    torch.testing.assert_close(
        core.logprobs_from_logits(logits_h, response, 1.0), core.logprobs_from_logits(logits, response, 1.0)
    )

    # the reference branch is the model as it was before training, not the trained policy
    with torch.no_grad():
        ref_logits = PolicyWithValueHead(plain_ref)(**inputs, start=start, with_values=False)[0]
        with trunk.reference(h):
            ref_logits_h = policy(**inputs, start=start, with_values=False)[0]
    torch.testing.assert_close(ref_logits_h, ref_logits)
    if unfrozen:
        assert not torch.allclose(ref_logits_h, logits_h)
    # the swap is undone: the plain forward pass is the policy again
    torch.testing.assert_close(policy(**inputs, start=start)[0], logits)


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_shared_trunk_gives_the_same_loss_and_gradients(make):
    torch.manual_seed(1)
    lm = make().eval()
    freeze_bottom(lm, 1)
    policy = PolicyWithValueHead(lm)
    trunk = FrozenTrunk(lm, 1)
    inputs, response = batch()
    mask = torch.ones_like(response, dtype=torch.float)
    old_logp = torch.randn(response.shape) * 0.1 - 3.0
    adv = torch.randn(response.shape)
    params = [p for p in policy.parameters() if p.requires_grad]

    def loss_and_grads(run):
        policy.zero_grad(set_to_none=True)
        logits, values = run()
        logp = core.logprobs_from_logits(logits, response, 1.0)
        pg, _ = core.policy_loss(logp, old_logp, adv, mask, 0.2)
        vf, _ = core.value_loss(values.float(), values.detach(), values.detach() + 1.0, mask, 0.2)
        loss = pg + vf
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in params]

    loss, grads = loss_and_grads(lambda: policy(**inputs, start=4))
    h = trunk.hidden(**inputs)

    def replayed():
        with trunk.replay(h):
            return policy(**inputs, start=4)

    loss_h, grads_h = loss_and_grads(replayed)
    torch.testing.assert_close(loss_h, loss)
    for g, g_h in zip(grads, grads_h):
        torch.testing.assert_close(g_h, g)
    # no gradient reaches the frozen blocks either way
    assert all(not p.requires_grad for p in trunk.blocks[0].parameters())


def test_shared_trunk_needs_frozen_layers():
    lm = tiny_gpt2()
    with pytest.raises(ValueError, match="num_layers_unfrozen"):
        FrozenTrunk(lm, 3)


def _tiny_pair(kind: str):
    """A tiny random policy with GPT-2's tokenizer: GPT-2 or Llama architecture."""
    from common.assets import gpt2_tokenizer

    torch.manual_seed(0)
    tok = gpt2_tokenizer()
    tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    model = tiny_gpt2(len(tok)) if kind == "gpt2" else tiny_llama(len(tok), tok.eos_token_id)
    return model.eval(), tok


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("minibatch_size", [8, 4], ids=["one-minibatch", "two-minibatches"])
def test_shared_trunk_ppo_run_equals_the_plain_one(kind, minibatch_size):
    """Two PPO steps with the shared frozen trunk give the same metrics and weights as with a full reference copy."""
    from rl_finetune.ppo import GenKwargs, PPOConfig, train

    def run(shared: bool):
        model, tok = _tiny_pair(kind)
        cfg = PPOConfig(
            total_steps=2, num_rollouts=8, generation_batch_size=8, minibatch_size=minibatch_size, ppo_epochs=2,
            lr=1e-3, init_kl_coef=0.1, eval_interval=1, num_layers_unfrozen=1, shared_trunk=shared,
            checkpoint_interval=0, mixed_precision="no", gen_kwargs=GenKwargs(max_new_tokens=5, stop_at_eos=False),
        )  # fmt: skip
        result = train((model, tok), lambda texts: [float(len(t) % 7) for t in texts], ["I think", "The film", "It was"],
                       cfg, eval_prompts=["A movie", "This"], progress=False)  # fmt: skip
        return result

    plain, shared = run(False), run(True)
    skip = {"elapsed_s", "step_time", "samples_per_s", "eval_time"}
    for a, b in zip(plain.metrics, shared.metrics):
        for key in a:
            if key not in skip and not key.startswith("time/"):
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    assert [s["response"] for s in plain.after] == [s["response"] for s in shared.after]
    for (name, p), q in zip(plain.model.named_parameters(), shared.model.parameters()):
        torch.testing.assert_close(q, p, msg=name)
    assert any(r.get("kl", 0) != 0 for r in shared.metrics)  # the reference really differs from the policy


def test_num_layers_unfrozen_beyond_the_model_is_refused():
    from common.errors import UserError
    from rl_finetune.ppo import PPOConfig, train

    model, tok = _tiny_pair("gpt2")
    with pytest.raises(UserError, match="num_layers_unfrozen=5 is more than the policy's 3 layers"):
        train((model, tok), lambda t: [0.0] * len(t), ["x"], PPOConfig(num_layers_unfrozen=5, mixed_precision="no"))


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_sampling_records_the_frozen_trunk_output(make):
    """The trunk output kept from token-by-token sampling equals a fresh forward pass over prompt + response
    (every position but the last, which nothing uses), and a run that ends early keeps nothing."""
    from base_policy.sampling import sample_tokens

    torch.manual_seed(0)
    lm = make().eval()
    freeze_bottom(lm, 1)
    trunk = FrozenTrunk(lm, 1)
    inputs, _ = batch()
    prompt, mask = inputs["input_ids"][:, :6], inputs["attention_mask"][:, :6]
    with trunk.recording() as outputs:
        response, _ = sample_tokens(lm, prompt, mask, max_new_tokens=4, eos_id=None, generator=torch.Generator())
    kept = FrozenTrunk.assemble(outputs, prompt.shape[1] + 4)
    ids = torch.cat([prompt, response], 1)
    attn = torch.cat([mask, torch.ones_like(response)], 1)
    fresh = trunk.hidden(ids, attn, (attn.cumsum(-1) - 1).clamp(min=0))
    assert kept.shape == fresh.shape
    real = attn[:, :-1].bool()  # padding rows are masked out everywhere they are used
    torch.testing.assert_close(kept[:, :-1][real], fresh[:, :-1][real], rtol=1e-4, atol=1e-5)
    assert FrozenTrunk.assemble(outputs[:-1], prompt.shape[1] + 4) is None  # stopped early: recompute


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_bf16_weight_copies_change_no_number(make):
    """Under bf16 autocast, cached bf16 copies of the weights give bit-for-bit the logits (and input
    gradients) autocast's own casts give, and the fp32 weights are back after the block."""
    from base_policy.sampling import Bf16Weights

    torch.manual_seed(0)
    lm = make().eval()
    freeze_bottom(lm, 1)
    inputs, _ = batch()
    before = {k: v.clone() for k, v in lm.state_dict().items()}

    def logits_and_grad(ctx):
        emb = lm.get_input_embeddings()(inputs["input_ids"]).detach().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16), ctx:
            out = lm(inputs_embeds=emb, attention_mask=inputs["attention_mask"], position_ids=inputs["position_ids"])
        out.logits.float().square().mean().backward()
        return out.logits.detach(), emb.grad

    fast = Bf16Weights(enabled=True)
    plain = logits_and_grad(contextlib.nullcontext())
    for _ in range(2):  # the second pass uses the cached copies
        cached = logits_and_grad(fast(lm))
        assert torch.equal(cached[0], plain[0]) and torch.equal(cached[1], plain[1])

    def matmul_dtypes():
        return {m.weight.dtype for m in lm.modules() if type(m).__name__ in ("Linear", "Conv1D")}

    with fast(lm, trainable=True):
        assert matmul_dtypes() == {torch.bfloat16}
    assert all(torch.equal(v, lm.state_dict()[k]) and lm.state_dict()[k].dtype == v.dtype for k, v in before.items())
    trainable = [p for p in lm.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)  # gradients still reach the trained blocks
    with Bf16Weights(enabled=False)(lm, trainable=True):
        assert matmul_dtypes() == {torch.float32}
