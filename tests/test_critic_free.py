"""RLOO, GRPO, their KL terms and loss, and best-of-n against values computed by hand (comments show the arithmetic)."""

from __future__ import annotations

import math

import pytest
import torch

from rl_finetune.ppo import critic_free as cf

t = torch.tensor


def close(a, b, tol=1e-4):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), atol=tol)


# ------------------------------------------------------------------ groups


def test_groups_and_repeat_each_share_one_layout():
    assert cf.repeat_each(["a", "b"], 3) == ["a", "a", "a", "b", "b", "b"]
    assert cf.groups(t([1.0, 2.0, 3.0, 4.0]), 2).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(ValueError, match="groups of k=3"):
        cf.groups(t([1.0, 2.0, 3.0, 4.0]), 3)


# ------------------------------------------------------------------ advantages


def test_rloo_leave_one_out_baseline():
    # prompt 0: rewards 1, 2, 6. Baselines: (2+6)/2 = 4, (1+6)/2 = 3.5, (1+2)/2 = 1.5 -> A = -3, -1.5, 4.5
    #   (= k/(k-1) * (r - mean) = 1.5 * (1-3, 2-3, 6-3))
    # prompt 1: rewards 0, 0, 3. Baselines: 1.5, 1.5, 0 -> A = -1.5, -1.5, 3
    adv = cf.rloo_advantages(t([1.0, 2.0, 6.0, 0.0, 0.0, 3.0]), k=3)
    assert close(adv, [-3.0, -1.5, 4.5, -1.5, -1.5, 3.0])
    # k = 2: the baseline is the other sample: (5, 1) -> A = 4, -4
    assert close(cf.rloo_advantages(t([5.0, 1.0]), k=2), [4.0, -4.0])


def test_rloo_refuses_k_1():
    with pytest.raises(ValueError, match="k >= 2"):
        cf.rloo_advantages(t([1.0, 2.0]), k=1)


def test_grpo_group_normalised_advantages():
    # k = 2: (1, 3): mean 2, unbiased std sqrt((1 + 1) / 1) = 1.41421 -> -/+ 1 / (1.41421 + 1e-4) = -/+ 0.70706
    #        (2, 2): all equal -> 0 (not 0/0)
    adv = cf.grpo_advantages(t([1.0, 3.0, 2.0, 2.0]), k=2)
    assert close(adv, [-0.70706, 0.70706, 0.0, 0.0])
    # without the std (Dr. GRPO): r - mean
    assert close(cf.grpo_advantages(t([1.0, 3.0, 2.0, 2.0]), k=2, scale_by_std=False), [-1.0, 1.0, 0.0, 0.0])
    # k = 4: (0, 0, 0, 4): mean 1, centred (-1, -1, -1, 3), unbiased var (1+1+1+9)/3 = 4, std 2 -> /2.0001
    assert close(cf.grpo_advantages(t([0.0, 0.0, 0.0, 4.0]), k=4), [-0.49998, -0.49998, -0.49998, 1.49993])
    with pytest.raises(ValueError, match="k >= 2"):
        cf.grpo_advantages(t([1.0]), k=1)


def test_advantages_by_name():
    r = t([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])
    assert close(cf.advantages(r, 3, "rloo"), cf.rloo_advantages(r, 3))
    assert close(cf.advantages(r, 3, "grpo", scale_by_std=False), cf.grpo_advantages(r, 3, scale_by_std=False))
    with pytest.raises(ValueError, match="unknown"):
        cf.advantages(r, 3, "ppo")


# ------------------------------------------------------------------ the KL in the reward


LOGP = t([[-1.0, -2.0], [-1.0, -1.0]])
REF = t([[-1.5, -1.0], [-2.0, -1.0]])
MASK = t([[1.0, 1.0], [1.0, 0.0]])


def test_sequence_rewards_k1():
    # r = logp - ref = [[0.5, -1], [1, (0, masked)]]; sums -0.5 and 1
    # beta 0.1: 1 - 0.1 * (-0.5) = 1.05; 2 - 0.1 * 1 = 1.9
    rewards, kl = cf.sequence_rewards(t([1.0, 2.0]), LOGP, REF, MASK, 0.1, "k1")
    assert close(rewards, [1.05, 1.9])
    assert close(kl, [[0.5, -1.0], [1.0, 0.0]])


def test_sequence_rewards_k3():
    # k3 = exp(-r) - 1 + r: r = 0.5 -> 0.60653 - 0.5 = 0.10653; r = -1 -> e - 2 = 0.71828; r = 1 -> e^-1 = 0.36788
    # sums 0.82481 and 0.36788; beta 0.1: 1 - 0.082481 = 0.917519; 2 - 0.036788 = 1.963212
    rewards, kl = cf.sequence_rewards(t([1.0, 2.0]), LOGP, REF, MASK, 0.1, "k3")
    assert close(rewards, [0.917519, 1.963212])
    assert close(kl, [[0.10653, 0.71828], [0.36788, 0.0]])
    # beta 0 (the KL in the loss instead): the scores unchanged
    assert close(cf.sequence_rewards(t([1.0, 2.0]), LOGP, REF, MASK, 0.0, "k3")[0], [1.0, 2.0])


def test_token_advantages_broadcast_over_the_response():
    assert close(cf.token_advantages(t([2.0, -1.0]), MASK), [[2.0, 2.0], [-1.0, 0.0]])


# ------------------------------------------------------------------ the loss


def uniform_logits():
    return torch.zeros(2, 2, 2, requires_grad=True)  # V = 2: every token has log-prob log 0.5 = -0.69315


TOKENS = t([[0, 1], [1, 0]])
ADV = t([[2.0, 2.0], [-1.0, 0.0]])  # token_advantages of (2, -1) under MASK


def test_policy_gradient_loss_at_ratio_one_is_minus_the_mean_advantage():
    logits = uniform_logits()
    old = torch.full((2, 2), math.log(0.5))
    loss, stats = cf.policy_gradient_loss(logits, TOKENS, old, ADV, MASK)
    # ratio 1 everywhere: loss = -mean of A over the 3 response tokens = -(2 + 2 - 1) / 3 = -1
    assert close(loss, -1.0)
    assert close(stats["clipfrac"], 0.0) and close(stats["approx_kl"], 0.0)
    assert "loss/value" not in stats  # no value head
    loss.backward()
    assert logits.grad is not None and logits.grad[1, 1].abs().sum() == 0  # the masked token gets no gradient


def test_policy_gradient_loss_clips_the_ratio():
    # row 0: old = log 0.5 - log 2 -> ratio 2, clipped to 1.2; A = 2 -> max(-4, -2.4) = -2.4 on both tokens
    # row 1: ratio 1, A = -1 -> 1. Mean over 3 tokens: (-2.4 - 2.4 + 1) / 3 = -1.26667; clipfrac 2/3
    old = torch.full((2, 2), math.log(0.5))
    old[0] -= math.log(2.0)
    loss, stats = cf.policy_gradient_loss(uniform_logits(), TOKENS, old, ADV, MASK, cliprange=0.2)
    assert close(loss, -1.26667)
    assert close(stats["clipfrac"], 2 / 3)


@pytest.mark.parametrize(
    "estimator, kl, total",
    [
        # ref = logp + 1 -> r = -1 on every token. k3 = e - 2 = 0.71828; beta 0.5 -> -1.26667 + 0.35914 = -0.90753
        ("k3", 0.71828, -0.90753),
        # k1 = r = -1; beta 0.5 -> -1.26667 - 0.5 = -1.76667
        ("k1", -1.0, -1.76667),
    ],
)
def test_policy_gradient_loss_with_the_kl_in_the_loss(estimator, kl, total):
    old = torch.full((2, 2), math.log(0.5))
    old[0] -= math.log(2.0)
    ref = torch.full((2, 2), math.log(0.5) + 1.0)
    loss, stats = cf.policy_gradient_loss(
        uniform_logits(), TOKENS, old, ADV, MASK, kl_coef=0.5, ref_logprobs=ref, kl_estimator=estimator
    )
    assert close(stats["loss/kl_sampled"], kl)
    assert close(loss, total)
    with pytest.raises(ValueError, match="ref_logprobs"):
        cf.policy_gradient_loss(uniform_logits(), TOKENS, old, ADV, MASK, kl_coef=0.5)


def test_k3_kl_loss_gradient():
    # d/dlogp [exp(ref - logp) - (ref - logp) - 1] = 1 - exp(ref - logp) = 1 - e = -1.71828 with ref = logp + 1;
    # the mean over 3 response tokens divides by 3 -> -0.57276; the masked token and the reference get none
    logp = torch.zeros(2, 2, requires_grad=True)
    ref = torch.ones(2, 2, requires_grad=True)
    cf.kl_loss(logp, ref, MASK, "k3").backward()
    assert close(logp.grad, [[-0.57276, -0.57276], [-0.57276, 0.0]])
    assert ref.grad is None


# ------------------------------------------------------------------ best-of-n


def test_best_of_n_picks_the_argmax_of_each_group():
    # groups of 3: (0.1, 0.9, 0.5) -> index 1; (3, 2, 3) -> its first 3, index 3 of the batch
    assert cf.best_of_n(t([0.1, 0.9, 0.5, 3.0, 2.0, 3.0]), 3).tolist() == [1, 3]
    assert cf.best_of_n(t([0.2, -1.0]), 1).tolist() == [0, 1]  # n = 1 keeps every sample


def test_best_of_n_analytic_kl():
    assert cf.best_of_n_kl(1) == 0.0
    assert close(cf.best_of_n_kl(2), 0.19315)  # log 2 - 1/2 = 0.69315 - 0.5
    assert close(cf.best_of_n_kl(4), 0.63629)  # log 4 - 3/4 = 1.38629 - 0.75
    with pytest.raises(ValueError):
        cf.best_of_n_kl(0)


# ------------------------------------------------------------------ KTO


def test_kto_sequence_logratios_and_reference_point():
    from rl_finetune.ppo import kto

    # LOGP - REF = [[0.5, -1], [1, (0)]] -> sums -0.5 and 1
    assert close(kto.sequence_logratios(LOGP, REF, MASK), [-0.5, 1.0])
    assert close(kto.reference_point(t([0.3, -0.1, 0.4])), 0.2)  # mean 0.2
    assert close(kto.reference_point(t([-1.0, 0.5])), 0.0)  # mean -0.25, clamped at 0
    x = t([1.0, 2.0], requires_grad=True)
    assert not kto.reference_point(x).requires_grad  # detached


def test_kto_loss_by_hand():
    from rl_finetune.ppo import kto

    # r = (2, -1, 0.5), good/bad/good, z = 0.5, beta = 1:
    #   good r=2:    1 - sigmoid(2 - 0.5)    = 1 - sigmoid(1.5) = 1 - 0.817574 = 0.182426, weight 2 -> 0.364852
    #   bad r=-1:    1 - sigmoid(0.5 - (-1)) = 1 - sigmoid(1.5)                 = 0.182426, weight 1 -> 0.182426
    #   good r=0.5:  1 - sigmoid(0)          = 0.5,                                weight 2 -> 1.0
    #   mean = (0.364852 + 0.182426 + 1.0) / 3 = 0.515759
    r, good = t([2.0, -1.0, 0.5], requires_grad=True), t([True, False, True])
    loss, stats = kto.kto_loss(r, good, 0.5, beta=1.0, desirable_weight=2.0, undesirable_weight=1.0)
    assert close(loss, 0.515759)
    assert close(stats["rewards/chosen"], 0.75)  # mean of beta (r - z) over good: (1.5 + 0) / 2
    assert close(stats["rewards/rejected"], -1.5)
    # beta 0.1, unit weights: margins 0.15, -0.15, 0 -> (1 - s(0.15)) * 2 + 0.5 = 2 * 0.462570 + 0.5; / 3 = 0.475047
    loss01, _ = kto.kto_loss(r, good, 0.5, beta=0.1)
    assert close(loss01, 0.475047)
    loss.backward()
    # d/dr of 2 (1 - s(r - z)) / 3 = -2 s(1.5)(1 - s(1.5)) / 3 = -2 * 0.149146 / 3 = -0.099431 (good, r=2)
    # bad: d/dr (1 - s(z - r)) / 3 = + s(1.5)(1 - s(1.5)) / 3 = 0.049715; good r=0.5: -2 * 0.25 / 3 = -0.166667
    assert close(r.grad, [-0.099431, 0.049715, -0.166667])


def test_kto_class_weights_and_one_class_refused():
    from rl_finetune.ppo import kto

    assert kto.class_weights(10, 30) == (3.0, 1.0)  # 3 * 10 / (1 * 30) = 1
    assert kto.class_weights(30, 10, ratio=4 / 3) == pytest.approx((4 / 9, 1.0))  # 4/9 * 30 / 10 = 4/3
    with pytest.raises(ValueError, match="good and bad labels"):
        kto.class_weights(12, 0)
    with pytest.raises(ValueError, match="4/3"):
        kto.class_weights(1, 1, ratio=2.0)
