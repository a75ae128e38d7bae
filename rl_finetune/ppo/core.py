"""The PPO algorithm as small pure functions on tensors, each tested alone (tests/test_ppo_core.py).

Shapes: B = episodes, T = response tokens. ``mask`` is (B, T) with 1 on response tokens up to
and including the EOS that ends a response, 0 after it (masks are right-padded prefixes).
References: Ziegler et al. 2019 (lm-human-preferences), Huang et al. 2023 ("The N implementation
details of RLHF with PPO"), Schulman's k1/k3 KL estimators (http://joschu.net/blog/kl-approx.html).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ------------------------------------------------------------------ masked statistics


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over the masked positions (Bessel-corrected by default)."""
    mean = masked_mean(x, mask)
    centred = (x - mean) ** 2
    var = masked_mean(centred, mask)
    if unbiased:
        n = mask.sum()
        if n > 1:
            var = var * n / (n - 1)
    return var


def whiten(
    x: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Scale ``x`` to unit variance over the masked positions; with ``shift_mean`` also to mean 0.
    Masked-out positions come back as 0."""
    if mask is None:
        mask = torch.ones_like(x)
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


# ------------------------------------------------------------------ log-probs and KL


def _scaled(logits: torch.Tensor, dtype: torch.dtype, temperature: float) -> torch.Tensor:
    """``logits / temperature`` in ``dtype`` (no division at temperature 1)."""
    x = logits.to(dtype)
    return x if temperature == 1.0 else x / temperature


class _TokenLogprob(torch.autograd.Function):
    """``log_softmax(logits / T)`` at ``tokens``, ``rows`` sequences at a time, keeping no (B, T, V) float32
    tensor for the backward pass: it saves only the logits as they came (bf16 under autocast), and its
    backward recomputes the softmax chunk by chunk into one gradient of the logits' own dtype. The plain
    expression keeps the float32 cast, the scaled logits and the log-softmax alive (200 MB apiece at
    SmolLM2's 49k vocabulary and 32 x 32 tokens), and its backward makes as many again.

    Both directions use torch's fused (log-)softmax kernels, one pass and one temporary per chunk: a
    ``logsumexp`` followed by ``exp(x - lse)`` makes three temporaries of the chunk's size, and on a CPU each
    fresh one costs its page faults (measured at 4 x 32 x 49,152: 6-25 ms for ``exp(x - lse)`` against
    2-3 ms for ``softmax``)."""

    @staticmethod
    def forward(ctx, logits, tokens, temperature: float, rows: int):
        dtype = torch.promote_types(logits.dtype, torch.float32)  # float32, or float64 for float64 logits
        out = torch.empty(tokens.shape, dtype=dtype, device=logits.device)
        for i in range(0, logits.shape[0], rows):
            logp = torch.log_softmax(_scaled(logits[i : i + rows], dtype, temperature), dim=-1)
            out[i : i + rows] = logp.gather(-1, tokens[i : i + rows].unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(logits, tokens)
        ctx.temperature, ctx.rows, ctx.dtype = temperature, rows, dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        logits, tokens = ctx.saved_tensors
        T, rows, dtype = ctx.temperature, ctx.rows, ctx.dtype
        grad = torch.empty_like(logits)
        for i in range(0, logits.shape[0], rows):
            chunk = logits[i : i + rows]
            x = torch.softmax(chunk, -1, dtype=dtype) if T == 1.0 else torch.softmax(_scaled(chunk, dtype, T), -1)
            g = grad_out[i : i + rows].to(dtype).unsqueeze(-1)  # (r, T, 1)
            d = x.mul_(-g)  # d/dx of (x_tok - lse) is onehot - softmax
            d.scatter_add_(-1, tokens[i : i + rows].unsqueeze(-1), g)
            grad[i : i + rows] = d / T if T != 1.0 else d
        return grad, None, None, None


def logprobs_from_logits(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0, rows: int = 4
) -> torch.Tensor:
    """log p(token) under ``softmax(logits / temperature)``. logits (B, T, V), tokens (B, T) -> (B, T), float32.
    Differentiable in ``logits``, ``rows`` sequences at a time (:class:`_TokenLogprob`: the same numbers as
    ``log_softmax(...).gather(...)`` to float32 rounding, for a fraction of the memory)."""
    return _TokenLogprob.apply(logits, tokens, float(temperature), max(1, int(rows)))


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of ``softmax(logits / temperature)`` per position: (B, T, V) -> (B, T)."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def logprobs_and_entropy(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0, rows: int = 4, with_entropy: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`logprobs_from_logits` and :func:`entropy_from_logits` in one pass, ``rows`` sequences at a time,
    without gradients: (B, T, V), (B, T) -> ((B, T), (B, T) or None without ``with_entropy``), float32.

    The same figures for a fraction of the memory: the two functions each materialise several float32
    (B, T, V) temporaries (the cast, the scaled logits, the log-softmax, its exponential), which at a
    49k vocabulary and 32 x 32 tokens are 200 MB apiece; here only ``rows`` sequences' worth live at once."""
    logp_tok = torch.empty(tokens.shape, dtype=torch.float32, device=logits.device)
    ent = torch.empty(tokens.shape, dtype=torch.float32, device=logits.device) if with_entropy else None
    with torch.no_grad():
        for i in range(0, logits.shape[0], rows):
            logp = F.log_softmax(logits[i : i + rows].float() / temperature, dim=-1)
            logp_tok[i : i + rows] = logp.gather(-1, tokens[i : i + rows].unsqueeze(-1)).squeeze(-1)
            if ent is not None:
                ent[i : i + rows] = -(logp.exp() * logp).sum(-1)
    return logp_tok, ent


def exact_kl(logits: torch.Tensor, ref_logp: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Exact KL(policy || reference) over the whole vocabulary at each position: (B, T, V) logits of the
    policy and (B, T, V) reference log-probabilities -> (B, T). Differentiable in ``logits``; unlike the
    sampled estimates below it has no sampling noise, so its gradient pulls every next-token distribution
    back towards the reference, not just the sampled token's probability."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return (logp.exp() * (logp - ref_logp)).sum(-1)


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy.

    k1 = log pi - log ref (unbiased, can be negative per token);
    k3 = (ref/pi - 1) - log(ref/pi) = exp(-r) - 1 + r with r = log pi - log ref (unbiased, always >= 0).
    """
    r = logprobs - ref_logprobs
    if estimator == "k1":
        return r
    if estimator == "k3":
        return torch.expm1(-r) + r
    raise ValueError(f"unknown KL estimator {estimator!r} (use 'k1' or 'k3')")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of a right-padded mask (0 for an all-zero row). (B, T) -> (B,)."""
    return (mask.sum(-1).long() - 1).clamp(min=0)


def compute_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    estimator: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: ``-kl_coef * kl`` on every response token, plus the score on the last one.

    Returns (rewards (B, T), kl (B, T)), both zero where ``mask`` is 0.
    """
    mask = mask.to(logprobs.dtype)
    kl = kl_per_token(logprobs, ref_logprobs, estimator) * mask
    rewards = -kl_coef * kl
    idx = last_token_index(mask)
    rewards = rewards.clone()
    rewards[torch.arange(rewards.shape[0]), idx] += scores.to(rewards.dtype)
    return rewards * mask, kl


def scale_and_clip_scores(
    scores: torch.Tensor, clip: float | None, std: float | None = None, whiten_batch: bool = False
) -> torch.Tensor:
    """Scale the scalar scores (divide by ``std`` when given, or whiten the batch), then clip to ±``clip``."""
    scores = scores.float()
    if whiten_batch and scores.numel() > 1:
        scores = (scores - scores.mean()) / (scores.std() + 1e-8)
    elif std is not None:
        scores = scores / max(std, 1e-8)
    if clip is not None and clip > 0:
        scores = scores.clamp(-clip, clip)
    return scores


class RunningMoments:
    """Running mean and std of all scores seen (Chan et al.'s parallel update), for ``scale_reward='running'``."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 1e-8

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().double().flatten()
        n = x.numel()
        if n == 0:
            return
        b_mean, b_var = x.mean().item(), x.var(unbiased=False).item()
        delta = b_mean - self.mean
        total = self.count + n
        self.mean += delta * n / total
        m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / total
        self.var, self.count = m2 / total, total

    @property
    def std(self) -> float:
        return max(self.var, 0.0) ** 0.5

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, d: dict) -> None:
        self.mean, self.var, self.count = d["mean"], d["var"], d["count"]


# ------------------------------------------------------------------ advantages


def gae(
    values: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the response tokens.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` and ``A_t = delta_t + gamma * lam * A_{t+1}``, with
    V = 0 after the end of a response. Returns (advantages, returns = advantages + values), 0 where masked.
    """
    mask = mask.to(values.dtype)
    values, rewards = values * mask, rewards * mask
    T = values.shape[1]
    adv = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = delta + gamma * lam * last
        adv[:, t] = last
    adv = adv * mask
    return adv, (adv + values) * mask


# ------------------------------------------------------------------ losses


def policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, cliprange: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate: mean over tokens of max(-A r, -A clip(r, 1 ± eps)), r = pi / pi_old.

    Stats: clipfrac (share of tokens where the clipped term won), approx_kl (k3 of old vs new, mean over tokens).
    """
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(pg1, pg2), mask)
    with torch.no_grad():
        clipfrac = masked_mean((pg2 > pg1).float(), mask)
        approx_kl = masked_mean(torch.expm1(log_ratio) - log_ratio, mask)
    return loss, {"clipfrac": clipfrac, "approx_kl": approx_kl}


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, cliprange_value: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss: 0.5 * mean over tokens of max((V - R)^2, (clip(V, V_old ± eps) - R)^2)."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    l1 = (values - returns) ** 2
    l2 = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(l1, l2), mask)
    with torch.no_grad():
        clipfrac = masked_mean((l2 > l1).float(), mask)
    return loss, {"vf_clipfrac": clipfrac}


def ppo_loss(
    logits: torch.Tensor,
    values: torch.Tensor,
    tokens: torch.Tensor,
    old_logprobs: torch.Tensor,
    old_values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    cliprange: float = 0.2,
    cliprange_value: float = 0.2,
    vf_coef: float = 1.0,
    ent_coef: float = 0.0,
    kl_loss_coef: float = 0.0,
    ref_logp_full: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one PPO minibatch:
    ``policy_loss + vf_coef * value_loss - ent_coef * entropy + kl_loss_coef * exact_kl`` (means over tokens).

    ``logits`` (B, T, V) and ``values`` (B, T) come from the policy being trained; ``tokens``, the old
    log-probs and values, advantages, returns and ``mask`` (B, T) from the rollout; ``ref_logp_full``
    (B, T, V, the reference's log-softmax) is needed only with ``kl_loss_coef``. The entropy and
    exact-KL terms are computed only when their coefficient is not 0.

    Stats (detached scalars): loss/policy, loss/value, loss/total, clipfrac, approx_kl, vf_clipfrac,
    and loss/kl with ``kl_loss_coef``.
    """
    logprobs = logprobs_from_logits(logits, tokens, temperature)
    pg_loss, pg_stats = policy_loss(logprobs, old_logprobs, advantages, mask, cliprange)
    vf_loss, vf_stats = value_loss(values.float(), old_values, returns, mask, cliprange_value)
    loss = pg_loss + vf_coef * vf_loss
    if ent_coef:
        loss = loss - ent_coef * masked_mean(entropy_from_logits(logits, temperature), mask)
    stats = {"loss/policy": pg_loss.detach(), "loss/value": vf_loss.detach(), **pg_stats, **vf_stats}
    if kl_loss_coef:
        if ref_logp_full is None:
            raise ValueError("ppo_loss with kl_loss_coef needs ref_logp_full (the reference's log-softmax)")
        kl_loss = masked_mean(exact_kl(logits, ref_logp_full, temperature), mask)
        loss = loss + kl_loss_coef * kl_loss
        stats["loss/kl"] = kl_loss.detach()
    stats["loss/total"] = loss.detach()
    return loss, stats


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R) over the masked tokens (1 = perfect value function, 0 = no better than a constant)."""
    var_r = masked_var(returns, mask, unbiased=False)
    if var_r <= 0:
        return float("nan")
    return float(1 - masked_var(returns - values, mask, unbiased=False) / var_r)


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Share of distinct word n-grams among all word n-grams of ``texts`` (1 = no repeats, -> 0 = collapse)."""
    grams, total = set(), 0
    for text in texts:
        words = text.split()
        for i in range(len(words) - n + 1):
            grams.add(tuple(words[i : i + n]))
            total += 1
    return len(grams) / total if total else 0.0
