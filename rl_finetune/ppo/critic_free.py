"""Critic-free learners (RLOO, GRPO) and best-of-n as small pure functions on tensors, each tested alone
(tests/test_critic_free.py); the trainer's phases 3-5 call them when ``ppo.algorithm`` is ``rloo`` or ``grpo``.

Layout: a rollout holds ``k = samples_per_prompt`` responses to each prompt, side by side: rows
``[i*k, (i+1)*k)`` answer prompt ``i`` (:meth:`PPOTrainer.rollout` repeats each prompt k times). B = episodes,
T = response tokens, ``mask`` (B, T) as in :mod:`rl_finetune.ppo.core`.

- RLOO (Ahmadian et al. 2024, "Back to Basics"; Kool et al. 2019): each sample's baseline is the mean reward
  of the *other* k - 1 samples of its prompt, ``A_i = r_i - mean_{j != i} r_j = k / (k - 1) * (r_i - mean_j r_j)``.
- GRPO (Shao et al. 2024, DeepSeekMath): ``A_i = (r_i - mean_j r_j) / (std_j r_j + eps)`` (std: Bessel-corrected,
  as in TRL), or only ``r_i - mean_j r_j`` without the std (Dr. GRPO, Liu et al. 2025).
- The KL to the reference goes either into the reward (``r_i = score_i - beta * sum_t kl_t``, as RLOO does) or
  into the loss (``+ beta * mean_t kl_t``, as GRPO does), with the k1 or k3 estimator of ``core.kl_per_token``.
- The loss is PPO's clipped surrogate (``core.policy_loss``) with the sequence advantage on every response token,
  and no value head.
- Best-of-n: keep the highest-scoring of n samples; its KL to the sampling policy is ``log n - (n - 1) / n``
  (Stiennon et al. 2020, appendix; Gao et al. 2022).
"""

from __future__ import annotations

import math

import torch

from rl_finetune.ppo import core

CRITIC_FREE = ("rloo", "grpo")

# ------------------------------------------------------------------ groups


def groups(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) -> (B / k, k): row i holds the k samples of prompt i (a ValueError when k does not divide B)."""
    if k < 1 or x.shape[0] % k:
        raise ValueError(f"{x.shape[0]} samples do not split into groups of k={k}")
    return x.reshape(-1, k)


def repeat_each(items: list, k: int) -> list:
    """``[a, b]`` -> ``[a, a, b, b]`` for k = 2: the rollout's layout, each prompt's k samples side by side."""
    return [item for item in items for _ in range(k)]


# ------------------------------------------------------------------ advantages (one number per sample)


def rloo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """RLOO: ``r_i`` minus the mean of the other ``k - 1`` rewards of its prompt. (B,) -> (B,). Needs k >= 2."""
    if k < 2:
        raise ValueError("RLOO needs k >= 2 samples per prompt (k = 1 has no leave-one-out baseline)")
    g = groups(rewards.float(), k)
    baseline = (g.sum(-1, keepdim=True) - g) / (k - 1)
    return (g - baseline).flatten()


def grpo_advantages(rewards: torch.Tensor, k: int, scale_by_std: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO: ``(r_i - group mean) / (group std + eps)``, or ``r_i - group mean`` without ``scale_by_std``.
    (B,) -> (B,). The std is Bessel-corrected (TRL's ``torch.std``); a group of equal rewards gets 0. Needs k >= 2."""
    if k < 2:
        raise ValueError("GRPO needs k >= 2 samples per prompt (a group of one has advantage 0)")
    g = groups(rewards.float(), k)
    centred = g - g.mean(-1, keepdim=True)
    if scale_by_std:
        centred = centred / (g.std(-1, keepdim=True) + eps)
    return centred.flatten()


def sequence_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    estimator: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One reward per sample, the KL in the reward: ``score - kl_coef * sum_t kl_t`` (B,), and the per-token
    KL estimate (B, T) (0 where masked; the KL controller and the metrics read it). ``kl_coef = 0`` leaves
    the scores as they are (the KL in the loss, or no KL)."""
    kl = core.kl_per_token(logprobs, ref_logprobs, estimator) * mask.to(logprobs.dtype)
    return scores.float() - kl_coef * kl.sum(-1), kl


def token_advantages(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The sequence advantage (B,) on every response token: (B, T), 0 where masked."""
    return advantages[:, None].to(mask.dtype) * mask


def advantages(rewards: torch.Tensor, k: int, algorithm: str, scale_by_std: bool = True) -> torch.Tensor:
    """``rloo_advantages`` or ``grpo_advantages`` by name. (B,) -> (B,)."""
    if algorithm == "rloo":
        return rloo_advantages(rewards, k)
    if algorithm == "grpo":
        return grpo_advantages(rewards, k, scale_by_std)
    raise ValueError(f"unknown critic-free algorithm {algorithm!r} (use one of {CRITIC_FREE})")


# ------------------------------------------------------------------ loss (no value head)


def kl_loss(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, estimator: str = "k3"):
    """The KL as a loss term: mean over response tokens of the k1 or k3 estimate, differentiable in ``logprobs``.
    k3 (``exp(ref - logp) - (ref - logp) - 1``) is GRPO's; k1's gradient has expectation 0 on samples of the
    current policy (E[grad log pi] = 0), so with k1 the term pulls only once the policy has moved off its samples."""
    return core.masked_mean(core.kl_per_token(logprobs, ref_logprobs.detach(), estimator), mask)


def policy_gradient_loss(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    cliprange: float = 0.2,
    ent_coef: float = 0.0,
    kl_coef: float = 0.0,
    ref_logprobs: torch.Tensor | None = None,
    kl_estimator: str = "k3",
    kl_loss_coef: float = 0.0,
    ref_logp_full: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one critic-free minibatch:
    ``policy_loss + kl_coef * kl_loss - ent_coef * entropy + kl_loss_coef * exact_kl`` (means over tokens).

    ``advantages`` (B, T) are :func:`token_advantages`; ``kl_coef`` (the KL in the loss) needs
    ``ref_logprobs`` (B, T), ``kl_loss_coef`` (exact KL, as in PPO) needs ``ref_logp_full`` (B, T, V).
    Stats: loss/policy, loss/total, clipfrac, approx_kl, and loss/kl_sampled, loss/kl with their coefficients.
    """
    logprobs = core.logprobs_from_logits(logits, tokens, temperature)
    pg_loss, pg_stats = core.policy_loss(logprobs, old_logprobs, advantages, mask, cliprange)
    loss, stats = pg_loss, {"loss/policy": pg_loss.detach(), **pg_stats}
    if kl_coef:
        if ref_logprobs is None:
            raise ValueError("policy_gradient_loss with kl_coef needs ref_logprobs")
        kl = kl_loss(logprobs, ref_logprobs, mask, kl_estimator)
        loss = loss + kl_coef * kl
        stats["loss/kl_sampled"] = kl.detach()
    if ent_coef:
        loss = loss - ent_coef * core.masked_mean(core.entropy_from_logits(logits, temperature), mask)
    if kl_loss_coef:
        if ref_logp_full is None:
            raise ValueError("policy_gradient_loss with kl_loss_coef needs ref_logp_full")
        exact = core.masked_mean(core.exact_kl(logits, ref_logp_full, temperature), mask)
        loss = loss + kl_loss_coef * exact
        stats["loss/kl"] = exact.detach()
    stats["loss/total"] = loss.detach()
    return loss, stats


# ------------------------------------------------------------------ best-of-n


def best_of_n(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Indices (into the B = prompts * n samples, laid out as above) of the best-scoring sample of each prompt:
    (B,) -> (B / n,). Ties go to the first."""
    g = groups(scores, n)
    return torch.arange(g.shape[0]) * n + g.argmax(-1).cpu()


def best_of_n_kl(n: int) -> float:
    """The analytic KL(best-of-n || sampling policy), ``log n - (n - 1) / n`` nats (0 for n = 1)."""
    if n < 1:
        raise ValueError("best-of-n needs n >= 1")
    return math.log(n) - (n - 1) / n
