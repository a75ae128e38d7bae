"""KTO's offline trainer: the policy learns straight from good/bad labels of single completions (the
database's judgements), against a frozen reference; the loss is :mod:`rl_finetune.ppo.kto`'s.

Each batch of labelled completions ``(x_i, y_i, good_i)`` gives ``r_i = log pi(y_i|x_i) - log ref(y_i|x_i)``;
the reference point ``z`` is the batch's mean log-ratio on *mismatched* pairs ``(x_i, y_j)``, clamped at 0 and
detached (TRL's KL estimate, which pairs each prompt with another example's completion). The mismatch is fixed
up front, a seeded cyclic shift over a random order, so the reference's log-probs of those pairs are taken in
the same reference pass as the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.errors import UserError
from rl_finetune.offline.batches import encode
from rl_finetune.offline.config import KTOConfig
from rl_finetune.offline.data import check_kto_examples
from rl_finetune.offline.loop import EvalFn, OfflineTrainer, train_offline
from rl_finetune.ppo.kto import class_weights, kto_loss, reference_point


def mismatched(n: int, seed: int) -> list[int]:
    """For each example i, the example j != i whose completion it is paired with for the KL estimate
    (n >= 2): a cyclic shift by one over a seeded permutation, so every completion is used once."""
    order = np.random.default_rng([seed, 7]).permutation(n).tolist()
    partner = [0] * n
    for k, i in enumerate(order):
        partner[i] = order[(k + 1) % n]
    return partner


def kto_weights(cfg: KTOConfig, n_good: int, n_bad: int) -> tuple[float, float]:
    """``(lambda_D, lambda_U)``: the configured ones, or with ``desirable_weight`` None the balancing
    :func:`rl_finetune.ppo.kto.class_weights` (``weight_ratio * n_bad / n_good``, 1)."""
    if cfg.desirable_weight is not None:
        return cfg.desirable_weight, cfg.undesirable_weight
    try:
        d, u = class_weights(n_good, n_bad, cfg.weight_ratio)
    except ValueError as err:
        raise UserError(str(err), "label completions of both kinds.") from None
    return d * cfg.undesirable_weight, u * cfg.undesirable_weight


def train_kto(
    policy_dir: Path,
    examples: list[tuple[str, str, bool]],
    out_dir: Path,
    cfg: KTOConfig,
    *,
    eval_fn: EvalFn | None = None,
    time_budget_s: float | None = None,
) -> dict:
    """Fine-tune the policy in ``policy_dir`` with KTO on ``examples``, ``(prompt, completion, good)`` each, and
    save it atomically to ``out_dir``; the rest as :func:`rl_finetune.offline.train_dpo` (the same returned
    dict; ``labels_used`` is the number of labelled completions). No examples, or labels of one class only,
    are refused with a :class:`~common.errors.UserError` before anything loads or is written."""
    examples = list(examples)
    n_good, n_bad = check_kto_examples(examples)
    n = len(examples)
    w_good, w_bad = kto_weights(cfg, n_good, n_bad)
    partner = mismatched(n, cfg.seed)
    desirable = torch.tensor([bool(good) for _, _, good in examples])

    def sequences(tok):
        # sequences 0..n-1: the labelled completions; n..2n-1: prompt i with its partner's completion (the KL pairs)
        prompts = [p for p, _, _ in examples] * 2
        completions = [c for _, c, _ in examples] + [examples[j][1] for j in partner]
        return encode(tok, prompts, completions, cfg.max_prompt_tokens, cfg.max_completion_tokens)

    def make_step(trainer: OfflineTrainer):
        ref = trainer.ref_logps

        def step(ids: list[int]):
            kl_ids = [n + i for i in ids]
            with torch.no_grad():
                z = reference_point(trainer.logps(kl_ids) - ref[kl_ids])
            logps = trainer.logps(ids)
            loss, stats = kto_loss(logps - ref[ids], desirable[ids].to(logps.device), z, cfg.beta, w_good, w_bad)
            good = desirable[ids]
            stats["logps/chosen"] = logps[good].detach().mean() if good.any() else torch.tensor(float("nan"))
            stats["logps/rejected"] = logps[~good].detach().mean() if (~good).any() else torch.tensor(float("nan"))
            return loss, stats

        return step

    return train_offline(
        "kto", policy_dir, out_dir, cfg, sequences=sequences, make_step=make_step, n_examples=n, labels_used=n,
        eval_fn=eval_fn, time_budget_s=time_budget_s,
    )  # fmt: skip
