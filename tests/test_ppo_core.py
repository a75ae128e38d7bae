"""Each piece of the PPO algorithm against values computed by hand (comments show the arithmetic)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from common.config import load_config
from common.errors import ConfigError, UserError
from rl_finetune.ppo import core
from rl_finetune.ppo.config import GenKwargs, PPOConfig
from rl_finetune.ppo.kl import AdaptiveKLController, FixedKLController, make_kl_controller
from rl_finetune.ppo.rollout import check_scores, left_pad, position_ids, response_mask, sample_from_logits

t = torch.tensor


def close(a, b, tol=1e-4):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), atol=tol)


# ------------------------------------------------------------------ statistics


def test_masked_mean_and_var_ignore_masked_positions():
    x, m = t([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]]), t([[1, 1, 0], [1, 1, 0]])
    assert close(core.masked_mean(x, m), 2.5)
    assert close(core.masked_var(x, m), 5 / 3)  # ((1.5²+0.5²)*2)/3
    assert close(core.masked_var(x, m, unbiased=False), 1.25)


def test_whiten_to_zero_mean_unit_variance():
    # mean 2.5, unbiased std sqrt(5/3) = 1.29099
    out = core.whiten(t([1.0, 2.0, 3.0, 4.0]))
    assert close(out, [-1.16190, -0.38730, 0.38730, 1.16190])
    kept = core.whiten(t([1.0, 2.0, 3.0, 4.0]), shift_mean=False)
    assert close(kept.mean(), 2.5)
    masked = core.whiten(t([1.0, 3.0, 99.0]), t([1, 1, 0]))
    assert close(masked, [-0.70711, 0.70711, 0.0])  # mean 2, std sqrt(2)


# ------------------------------------------------------------------ log-probs and KL


def test_logprobs_and_temperature():
    logits = t([[[0.0, math.log(3.0)]]])  # p = [1/4, 3/4]
    assert close(core.logprobs_from_logits(logits, t([[1]])), [[math.log(0.75)]])
    # temperature 2: logits/2 -> p ∝ [1, sqrt 3]
    p1 = math.sqrt(3) / (1 + math.sqrt(3))
    assert close(core.logprobs_from_logits(logits, t([[1]]), temperature=2.0), [[math.log(p1)]])
    assert close(core.entropy_from_logits(t([[[0.0, 0.0]]])), [[math.log(2)]])


def test_chunked_logprobs_and_entropy_equal_the_plain_ones():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, 11, generator=g).to(torch.bfloat16)  # 7 rows: chunks of 3, 3, 1
    tokens = torch.randint(0, 11, (7, 5), generator=g)
    logp, ent = core.logprobs_and_entropy(logits, tokens, temperature=0.7, rows=3)
    assert logp.dtype == ent.dtype == torch.float32
    assert torch.allclose(logp, core.logprobs_from_logits(logits, tokens, 0.7), atol=1e-6)
    assert torch.allclose(ent, core.entropy_from_logits(logits, 0.7), atol=1e-6)
    only, none = core.logprobs_and_entropy(logits, tokens, 0.7, with_entropy=False)
    assert none is None and torch.equal(only, logp)


def test_exact_kl_over_the_vocabulary():
    # policy softmax([0, ln 3]) = [0.25, 0.75]; reference [0.5, 0.5]
    # KL = 0.25 ln(0.25/0.5) + 0.75 ln(0.75/0.5) = -0.17329 + 0.30410 = 0.13081
    logits = t([[[0.0, math.log(3.0)]]], requires_grad=True)
    ref = torch.log(t([[[0.5, 0.5]]]))
    kl = core.exact_kl(logits, ref)
    assert close(kl, [[0.13081]])
    kl.sum().backward()
    assert logits.grad.abs().sum() > 0  # differentiable in the policy's logits
    assert close(core.exact_kl(t([[[1.0, 2.0, 3.0]]]), torch.log_softmax(t([[[1.0, 2.0, 3.0]]]), -1)), [[0.0]])
    # temperature 2: softmax([0, ln 9] / 2) = softmax([0, ln 3]) -> the same 0.13081
    assert close(core.exact_kl(t([[[0.0, math.log(9.0)]]]), ref, temperature=2.0), [[0.13081]])


def test_kl_estimators():
    logp, ref = t([-1.0, -2.0]), t([-2.0, -1.0])  # r = +1, -1
    assert close(core.kl_per_token(logp, ref, "k1"), [1.0, -1.0])
    # k3 = exp(-r) - 1 + r: e^-1 = 0.36788; e^1 - 2 = 0.71828
    assert close(core.kl_per_token(logp, ref, "k3"), [0.36788, 0.71828])
    with pytest.raises(ValueError):
        core.kl_per_token(logp, ref, "k2")


def test_compute_rewards_kl_penalty_plus_score_on_last_token():
    scores = t([2.0, -1.0])
    logp = t([[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]])
    ref = t([[-1.5, -1.0, -0.5], [-0.5, -1.0, -1.0]])
    mask = t([[1, 1, 0], [1, 1, 1]])
    rewards, kl = core.compute_rewards(scores, logp, ref, mask, kl_coef=0.1)
    # row 0: kl = [0.5, 0, (masked)] -> rewards [-0.05, 0 + 2.0, 0]
    # row 1: kl = [-0.5, 0, 0]       -> rewards [+0.05, 0, 0 - 1.0]
    assert close(rewards, [[-0.05, 2.0, 0.0], [0.05, 0.0, -1.0]])
    assert close(kl, [[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0]])


def test_scale_and_clip_scores():
    s = t([1.0, -20.0, 30.0])
    assert close(core.scale_and_clip_scores(s, clip=10), [1.0, -10.0, 10.0])
    assert close(core.scale_and_clip_scores(s, clip=10, std=2.0), [0.5, -10.0, 10.0])
    w = core.scale_and_clip_scores(t([1.0, 3.0]), clip=None, whiten_batch=True)
    assert close(w, [-0.70711, 0.70711])


def test_running_moments_match_the_whole_sample():
    rm = core.RunningMoments()
    rm.update(t([1.0, 2.0, 3.0]))
    rm.update(t([4.0, 5.0]))
    assert rm.mean == pytest.approx(3.0, abs=1e-6)
    assert rm.std == pytest.approx(math.sqrt(2.0), abs=1e-6)  # population variance of 1..5 is 2


# ------------------------------------------------------------------ GAE


def test_gae_by_hand():
    # values [1,2,3], rewards [0,0,1], gamma 1, lam 0.5
    # t2: delta = 1 + 0 - 3 = -2, A = -2;  t1: delta = 0 + 3 - 2 = 1, A = 1 + .5*-2 = 0
    # t0: delta = 0 + 2 - 1 = 1, A = 1 + .5*0 = 1;  returns = A + V = [2, 2, 1]
    adv, ret = core.gae(t([[1.0, 2.0, 3.0]]), t([[0.0, 0.0, 1.0]]), t([[1, 1, 1]]), gamma=1.0, lam=0.5)
    assert close(adv, [[1.0, 0.0, -2.0]])
    assert close(ret, [[2.0, 2.0, 1.0]])


def test_gae_stops_at_the_end_of_a_response():
    # mask [1,1,0]: the masked step counts as V=0, r=0 whatever is stored there
    # t1: delta = 1 + 0 - 2 = -1, A = -1;  t0: delta = 0 + 2 - 1 = 1, A = 1 + .5*-1 = 0.5
    adv, ret = core.gae(t([[1.0, 2.0, 99.0]]), t([[0.0, 1.0, 99.0]]), t([[1, 1, 0]]), gamma=1.0, lam=0.5)
    assert close(adv, [[0.5, -1.0, 0.0]])
    assert close(ret, [[1.5, 1.0, 0.0]])


def test_gae_with_lambda_one_gives_discounted_returns():
    # gamma 0.9, lam 1: returns are the discounted sums of rewards: [0.9 * 1, 1]
    adv, ret = core.gae(t([[0.5, 0.5]]), t([[0.0, 1.0]]), t([[1, 1]]), gamma=0.9, lam=1.0)
    assert close(ret, [[0.9, 1.0]])
    assert close(adv, [[0.4, 0.5]])


# ------------------------------------------------------------------ losses


def test_clipped_surrogate_by_hand():
    ratio = t([[1.5, 0.5, 1.1]])
    adv = t([[1.0, -1.0, 1.0]])
    # token 0: -1*1.5 = -1.5 vs -1*1.2 = -1.2 -> -1.2 (clipped)
    # token 1: +1*0.5 = 0.5  vs +1*0.8 = 0.8  -> 0.8 (clipped)
    # token 2: -1.1 vs -1.1 -> -1.1;  mean = (-1.2 + 0.8 - 1.1)/3 = -0.5
    loss, stats = core.policy_loss(ratio.log(), torch.zeros(1, 3), adv, torch.ones(1, 3), cliprange=0.2)
    assert close(loss, -0.5)
    assert close(stats["clipfrac"], 2 / 3)
    # approx-KL (k3 of new vs old): (r - 1) - log r = 0.094535, 0.193147, 0.004690 -> mean 0.097457
    assert close(stats["approx_kl"], 0.097457)


def test_surrogate_ignores_masked_tokens_and_has_the_right_gradient():
    logp = torch.zeros(1, 2, requires_grad=True)
    loss, _ = core.policy_loss(logp, torch.zeros(1, 2), t([[2.0, 100.0]]), t([[1, 0]]), cliprange=0.2)
    loss.backward()
    assert close(loss, -2.0)  # -A * ratio(=1) on the one unmasked token
    assert close(logp.grad, [[-2.0, 0.0]])  # d(-A e^{logp})/dlogp = -A


def test_clipped_value_loss_by_hand():
    # v 1.5, old 1.0, R 2.0, clip 0.2: clipped v = 1.2; (1.5-2)^2 = .25 vs (1.2-2)^2 = .64 -> .64
    # v 0.9, old 1.0, R 0.0: inside the clip, .81 both -> .81;  loss = 0.5 * mean(.64, .81) = 0.3625
    loss, stats = core.value_loss(t([[1.5, 0.9]]), t([[1.0, 1.0]]), t([[2.0, 0.0]]), torch.ones(1, 2), 0.2)
    assert close(loss, 0.3625)
    assert close(stats["vf_clipfrac"], 0.5)


def test_ppo_loss_by_hand():
    # uniform policy over 2 tokens: log-prob ln 0.5 = the old one, so ratio 1; A = [1, -1] -> policy loss
    # mean(-1, +1) = 0; the value terms of test_clipped_value_loss_by_hand -> 0.3625; entropy ln 2 = 0.693147;
    # exact KL([.5, .5] || [.25, .75]) = .5 ln 2 + .5 ln(2/3) = 0.346574 - 0.202733 = 0.143841.
    # loss = 0 + 0.5 * 0.3625 - 0.1 * 0.693147 + 2 * 0.143841 = 0.18125 - 0.069315 + 0.287682 = 0.399617
    logits = torch.zeros(1, 2, 2, requires_grad=True)
    values = t([[1.5, 0.9]], requires_grad=True)
    ref = t([0.25, 0.75]).log().expand(1, 2, 2)
    old_logp = torch.full((1, 2), math.log(0.5))
    args = (logits, values, t([[0, 1]]), old_logp, t([[1.0, 1.0]]), t([[1.0, -1.0]]), t([[2.0, 0.0]]), torch.ones(1, 2))
    coefs = dict(cliprange=0.2, cliprange_value=0.2, vf_coef=0.5, ent_coef=0.1)
    loss, stats = core.ppo_loss(*args, **coefs, kl_loss_coef=2.0, ref_logp_full=ref)
    assert close(loss, 0.399617)
    assert close(stats["loss/policy"], 0.0) and close(stats["loss/value"], 0.3625)
    assert close(stats["loss/kl"], 0.143841) and close(stats["loss/total"], 0.399617)
    assert close(stats["clipfrac"], 0.0) and close(stats["approx_kl"], 0.0) and close(stats["vf_clipfrac"], 0.5)
    loss.backward()
    assert logits.grad is not None and values.grad is not None
    # without the optional terms: 0.5 * 0.3625, and no loss/kl
    plain, plain_stats = core.ppo_loss(*args, cliprange=0.2, cliprange_value=0.2, vf_coef=0.5)
    assert close(plain, 0.18125) and "loss/kl" not in plain_stats
    with pytest.raises(ValueError, match="ref_logp_full"):
        core.ppo_loss(*args, kl_loss_coef=1.0)


def test_ppo_loss_is_the_sum_of_its_pieces():
    g = torch.Generator().manual_seed(0)
    B, T, V = 3, 4, 5
    logits, ref_logits = torch.randn(B, T, V, generator=g), torch.randn(B, T, V, generator=g)
    tokens = torch.randint(V, (B, T), generator=g)
    old_logp = core.logprobs_from_logits(logits + 0.3 * torch.randn(B, T, V, generator=g), tokens, 0.7)
    values, old_values, adv, ret = (torch.randn(B, T, generator=g) for _ in range(4))
    mask = t([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    ref = torch.log_softmax(ref_logits / 0.7, dim=-1)
    loss, stats = core.ppo_loss(
        logits, values, tokens, old_logp, old_values, adv, ret, mask, temperature=0.7, cliprange=0.1,
        cliprange_value=0.3, vf_coef=0.4, ent_coef=0.05, kl_loss_coef=0.2, ref_logp_full=ref,
    )  # fmt: skip
    pg, pg_stats = core.policy_loss(core.logprobs_from_logits(logits, tokens, 0.7), old_logp, adv, mask, 0.1)
    vf, _ = core.value_loss(values, old_values, ret, mask, 0.3)
    ent = core.masked_mean(core.entropy_from_logits(logits, 0.7), mask)
    kl = core.masked_mean(core.exact_kl(logits, ref, 0.7), mask)
    assert close(loss, pg + 0.4 * vf - 0.05 * ent + 0.2 * kl, tol=1e-6)
    assert close(stats["approx_kl"], pg_stats["approx_kl"]) and close(stats["loss/kl"], kl)


def test_explained_variance_and_distinct_n():
    r = t([[1.0, 2.0, 3.0]])
    assert core.explained_variance(r, r, torch.ones(1, 3)) == pytest.approx(1.0)
    assert core.explained_variance(torch.zeros(1, 3) + 2.0, r, torch.ones(1, 3)) == pytest.approx(0.0, abs=1e-6)
    assert core.distinct_n(["a b a b a b"], 2) == pytest.approx(2 / 5)
    assert core.distinct_n(["a b c", "d e f"], 2) == 1.0


# ------------------------------------------------------------------ KL controllers


def test_adaptive_kl_controller_of_ziegler():
    # beta *= 1 + clip(KL/target - 1, ±0.2) * n / horizon
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=100)
    assert ctl.update(12.0, 10) == pytest.approx(0.1 * (1 + 0.2 * 0.1))  # error 1.0 clipped to 0.2
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=100)
    assert ctl.update(3.0, 10) == pytest.approx(0.1 * (1 - 0.2 * 0.1))  # error -0.5 clipped to -0.2
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=100)
    assert ctl.update(6.6, 10) == pytest.approx(0.1 * (1 + 0.1 * 0.1))  # error 0.1, inside the clip
    fixed = FixedKLController(0.05)
    assert fixed.update(100.0, 10) == 0.05
    assert isinstance(make_kl_controller(0.1, None, None), FixedKLController)


def test_kl_floor_keeps_beta_while_the_kl_climbs_and_still_raises_it():
    floored = make_kl_controller(0.1, 6.0, 100, minimum=0.1)
    free = make_kl_controller(0.1, 6.0, 100)
    for _ in range(20):  # KL far below target: the plain controller lowers beta 2% a step, the floor holds it
        floored.update(1.0, 10)
        free.update(1.0, 10)
    assert floored.value == pytest.approx(0.1)
    assert free.value == pytest.approx(0.1 * 0.98**20)
    assert floored.update(12.0, 10) == pytest.approx(0.1 * 1.02)  # above target it rises as before
    floored.value = 0.3
    assert floored.update(1.0, 10) == pytest.approx(0.3 * 0.98)  # and above the floor it falls as before
    low_start = make_kl_controller(0.05, 6.0, 100, minimum=0.1)  # a start below the floor lowers the floor to it
    assert low_start.update(1.0, 10) == pytest.approx(0.05)


# ------------------------------------------------------------------ rollout helpers


def test_response_mask_through_first_eos():
    resp = t([[5, 7, 0, 9], [5, 6, 7, 8], [0, 0, 0, 0]])
    assert response_mask(resp, eos_id=0, stop_at_eos=True).tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert response_mask(resp, eos_id=0, stop_at_eos=False).tolist() == [[1] * 4] * 3


def test_sampling_follows_the_distribution_and_skips_impossible_tokens():
    probs = t([0.0, 0.1, 0.0, 0.6, 0.3])
    logits = probs.log().expand(20000, 5)  # log 0 = -inf: never sampled
    draws = sample_from_logits(logits, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=5).float() / draws.numel()
    assert freq[0] == 0 and freq[2] == 0
    assert close(freq, probs, tol=0.015)


def test_left_pad_and_positions():
    b = left_pad([[1, 2, 3], [4]], pad_id=0, texts=["a", "b"])
    assert b.input_ids.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert b.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert position_ids(b.attention_mask).tolist() == [[0, 1, 2], [0, 0, 0]]


# ------------------------------------------------------------------ bad input


def test_kl_target_without_kl_horizon_is_rejected(smoke_env):
    with pytest.raises(ConfigError, match="kl_horizon"):
        load_config(PPOConfig, "ppo", overrides=["kl_target=6"])
    cfg = load_config(PPOConfig, "ppo", overrides=["kl_target=6", "kl_horizon=10000"])
    assert cfg.kl_target is not None


def test_config_rejects_topk_and_bad_minibatching():
    with pytest.raises(ConfigError, match="top_k"):
        PPOConfig(gen_kwargs=GenKwargs(top_k=50)).validate()
    with pytest.raises(ConfigError, match="multiple"):
        PPOConfig(num_rollouts=16, minibatch_size=5).validate()


def test_check_scores_names_the_batch():
    assert check_scores([1, 2], 2, "step 3").tolist() == [1.0, 2.0]
    with pytest.raises(UserError, match=r"step 3, rollout chunk 1.*NaN|NaN.*step 3, rollout chunk 1"):
        check_scores([1.0, float("nan")], 2, "step 3, rollout chunk 1")
    with pytest.raises(UserError, match="returned 1 scores for 2 texts at step 0"):
        check_scores([1.0], 2, "step 0")


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_equal_log_softmax_and_their_gradient_is_exact(temperature):
    """The chunked token log-prob (no float32 (B, T, V) copies kept for backward) gives log_softmax's values,
    an exact gradient (gradcheck in float64), and under bf16 the same bf16 gradient as the plain expression."""
    from rl_finetune.ppo.core import _TokenLogprob

    torch.manual_seed(0)
    x = torch.randn(5, 3, 11, dtype=torch.float64, requires_grad=True)
    tokens = torch.randint(0, 11, (5, 3))
    assert torch.autograd.gradcheck(lambda z: _TokenLogprob.apply(z, tokens, temperature, 2), (x,))
    want = F.log_softmax(x.detach().float() / temperature, -1).gather(-1, tokens[..., None])[..., 0]
    got = core.logprobs_from_logits(x.detach().float(), tokens, temperature)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)
    xb = torch.randn(4, 6, 50, dtype=torch.bfloat16, requires_grad=True)
    tb, w = torch.randint(0, 50, (4, 6)), torch.randn(4, 6)
    (core.logprobs_from_logits(xb, tb, temperature, rows=3) * w).sum().backward()
    ours, xb.grad = xb.grad, None
    (F.log_softmax(xb.float() / temperature, -1).gather(-1, tb[..., None])[..., 0] * w).sum().backward()
    assert ours.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), xb.grad.float(), rtol=0, atol=1e-2)
