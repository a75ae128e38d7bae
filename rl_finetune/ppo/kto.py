"""KTO (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization") as pure functions:
learning straight from good/bad labels of single completions (the database's judgements), offline, against a
frozen reference. Tested by hand in tests/test_critic_free.py. The offline trainer that feeds it the labelled
completions is :func:`rl_finetune.offline.train_kto` (docs/ppo.md, "DPO and KTO").

With ``r = log pi(y|x) - log ref(y|x)`` summed over the completion and the reference point
``z = max(0, KL estimate)`` (detached; TRL estimates it on mismatched prompt/completion pairs of the batch):

- a good (desirable) completion costs ``lambda_D * (1 - sigmoid(beta * (r - z)))``,
- a bad (undesirable) one ``lambda_U * (1 - sigmoid(beta * (z - r)))``,

and the loss is the mean over the batch. ``beta`` is the KL leash (TRL default 0.1); the class weights keep
``lambda_D * n_D / (lambda_U * n_U)`` in the paper's recommended [1, 4/3] when the labels are unbalanced.
"""

from __future__ import annotations

import torch


def sequence_logratios(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum_t (log pi - log ref)`` over each completion's tokens: (B, T) -> (B,)."""
    return ((logprobs - ref_logprobs) * mask.to(logprobs.dtype)).sum(-1)


def reference_point(kl_logratios: torch.Tensor) -> torch.Tensor:
    """KTO's ``z_ref``: the mean log-ratio of (mismatched) samples, clamped at 0 and detached (no gradient)."""
    return kl_logratios.detach().float().mean().clamp(min=0.0)


def class_weights(n_good: int, n_bad: int, ratio: float = 1.0) -> tuple[float, float]:
    """``(lambda_D, lambda_U) = (ratio * n_bad / n_good, 1)``, so that ``lambda_D * n_good / (lambda_U * n_bad)``
    is ``ratio`` (the paper advises [1, 4/3]). Labels of one class only are refused (ValueError): with no bad
    (or no good) completions there is nothing on the other side of the reference point."""
    if n_good < 1 or n_bad < 1:
        raise ValueError(
            f"KTO needs good and bad labels ({n_good} good, {n_bad} bad): label some completions of the other kind"
        )
    if not 1.0 <= ratio <= 4 / 3:
        raise ValueError(f"ratio={ratio} is outside KTO's recommended [1, 4/3]")
    return ratio * n_bad / n_good, 1.0


def kto_loss(
    logratios: torch.Tensor,
    desirable: torch.Tensor,
    z_ref: torch.Tensor | float,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The KTO loss of a batch: ``logratios`` (B,) from :func:`sequence_logratios`, ``desirable`` (B,) bool
    (good = True), ``z_ref`` from :func:`reference_point`. Returns (mean weighted loss, stats: rewards/chosen and
    rewards/rejected, the mean ``beta * (r - z)`` of each class, NaN for a class absent from the batch)."""
    desirable = desirable.bool()
    margin = beta * (logratios.float() - torch.as_tensor(z_ref, dtype=torch.float32))
    losses = torch.where(
        desirable, desirable_weight * (1 - torch.sigmoid(margin)), undesirable_weight * (1 - torch.sigmoid(-margin))
    )
    with torch.no_grad():
        nan = torch.tensor(float("nan"))
        chosen = margin[desirable].mean() if desirable.any() else nan
        rejected = margin[~desirable].mean() if (~desirable).any() else nan
    return losses.mean(), {"rewards/chosen": chosen, "rewards/rejected": rejected, "kl_ref": torch.as_tensor(z_ref)}
