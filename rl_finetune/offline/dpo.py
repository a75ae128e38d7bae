"""DPO (Rafailov et al. 2023, "Direct Preference Optimization"): the policy learns straight from preference
pairs, against a frozen reference, with no reward model and no sampling.

With the summed log-probs of each completion under the policy (``pi``) and the reference (``ref``), the
implicit reward of a completion is ``beta * (log pi - log ref)`` and the sigmoid loss of a pair is

    -log sigmoid(beta * ((log pi_c - log ref_c) - (log pi_r - log ref_r)))

(c = chosen, r = rejected; TRL's ``loss_type="sigmoid"``). Its statistics carry TRL's names:
``rewards/chosen``, ``rewards/rejected``, ``rewards/accuracies`` (share of pairs whose chosen reward is the
higher), ``rewards/margins`` (chosen minus rejected reward), ``logps/chosen`` and ``logps/rejected``.
Hand-checked in tests/test_dpo.py.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from rl_finetune.offline.batches import encode
from rl_finetune.offline.batches import sequence_logprobs as sequence_logprobs  # the pure log-prob of a completion
from rl_finetune.offline.config import DPOConfig
from rl_finetune.offline.data import check_pairs
from rl_finetune.offline.loop import EvalFn, OfflineTrainer, train_offline


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The DPO sigmoid loss of a batch of pairs, from summed log-probs (B,) each; returns (mean loss, stats)."""
    chosen = policy_chosen.float() - ref_chosen.float()  # log-ratio of each chosen completion
    rejected = policy_rejected.float() - ref_rejected.float()
    losses = -F.logsigmoid(beta * (chosen - rejected))
    with torch.no_grad():
        r_chosen, r_rejected = beta * chosen, beta * rejected
        stats = {
            "rewards/chosen": r_chosen.mean(),
            "rewards/rejected": r_rejected.mean(),
            "rewards/accuracies": (r_chosen > r_rejected).float().mean(),
            "rewards/margins": (r_chosen - r_rejected).mean(),
            "logps/chosen": policy_chosen.detach().float().mean(),
            "logps/rejected": policy_rejected.detach().float().mean(),
        }
    return losses.mean(), stats


def train_dpo(
    policy_dir: Path,
    pairs: list,
    out_dir: Path,
    cfg: DPOConfig,
    *,
    eval_fn: EvalFn | None = None,
    time_budget_s: float | None = None,
) -> dict:
    """Fine-tune the policy in ``policy_dir`` with DPO on ``pairs`` (:class:`db.types.PreferencePair`: ``prompt``,
    ``chosen``, ``rejected``) and save it atomically to ``out_dir`` (plain HF format, with metrics.jsonl and
    summary.json). ``eval_fn(model, tokenizer, step) -> dict`` runs at step 0, every ``cfg.eval_every`` steps
    and at the end; ``time_budget_s`` (None: ``cfg.max_minutes``) stops the run early.

    Returns ``{"out_dir", "steps", "wall_s", "final" (the last eval row), "labels_used" (pairs), "evals"
    (every eval row with its ``step`` and ``elapsed_s``), "summary", "metrics"}``. Bad pairs (fewer than
    :data:`~rl_finetune.offline.data.MIN_PAIRS`, chosen equal to rejected, an empty text) are refused
    with a :class:`~common.errors.UserError` before anything loads or is written."""
    pairs = list(pairs)
    check_pairs(pairs)
    n = len(pairs)

    def sequences(tok):
        # sequence 2i is pair i's chosen completion, 2i + 1 its rejected one
        prompts = [p.prompt for p in pairs for _ in (0, 1)]
        completions = [c for p in pairs for c in (p.chosen, p.rejected)]
        return encode(tok, prompts, completions, cfg.max_prompt_tokens, cfg.max_completion_tokens)

    def make_step(trainer: OfflineTrainer):
        ref = trainer.ref_logps

        def step(ids: list[int]):
            chosen, rejected = [2 * i for i in ids], [2 * i + 1 for i in ids]
            logps = trainer.logps(chosen + rejected)  # one forward pass for both sides
            return dpo_loss(logps[: len(ids)], logps[len(ids) :], ref[chosen], ref[rejected], cfg.beta)

        return step

    return train_offline(
        "dpo", policy_dir, out_dir, cfg, sequences=sequences, make_step=make_step, n_examples=n, labels_used=n,
        eval_fn=eval_fn, time_budget_s=time_budget_s,
    )  # fmt: skip
