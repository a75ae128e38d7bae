"""Best-of-n sampling against the reward model, scored like a PPO eval (the baseline of Gao et al. 2022).

For every held-out prompt, sample ``n`` responses from the policy, keep the one the reward model scores
highest, and score the kept ones with the same scorers as :class:`~rl_finetune.ppo.evaluate.Evaluator`
(``reward``, ``gold``, every ``eval_fns``, distinct-2), with the same prompts and sampling seed. The KL of the
best-of-n distribution to the policy is the analytic ``log n - (n - 1) / n`` (:func:`critic_free.best_of_n_kl`),
so ``eval/kl`` is that number and a best-of-n point sits on the same gold-vs-KL plot as the learners' evals::

    from rl_finetune.ppo.best_of_n import best_of_n
    row, samples = best_of_n(load_policy("artifacts/base_policy"), reward_fn, held_out, n=8, gold_fn=gold)
    row["eval/gold"], row["eval/kl"]  # kl = log 8 - 7/8 = 1.204 nats
"""

from __future__ import annotations

import torch

from rl_finetune.ppo.config import PPOConfig
from rl_finetune.ppo.critic_free import best_of_n as best_indices
from rl_finetune.ppo.critic_free import best_of_n_kl, repeat_each
from rl_finetune.ppo.evaluate import Evaluator
from rl_finetune.ppo.report import Timer, eval_metrics
from rl_finetune.ppo.rollout import check_scores, seeded


@torch.no_grad()
def evaluate_best_of_n(evaluator: Evaluator, policy, n: int) -> tuple[dict, list[dict]]:
    """Best-of-``n`` on ``evaluator``'s prompts with its sampler, seed and scorers: (the eval columns of a metrics
    row, one dict per prompt: prompt, the kept response and every score). The row adds ``eval/best_of_n`` (n) and
    ``eval/reward_mean_of_n`` (the mean reward of all n samples, what plain sampling scores).
    ``policy``: an unwrapped :class:`~rl_finetune.value_head.PolicyWithValueHead`."""
    if n < 1:
        raise ValueError("best-of-n needs n >= 1")
    if not evaluator.prompts:
        return {}, []
    tokens, prompts = repeat_each(evaluator.tokens, n), repeat_each(evaluator.prompts, n)
    texts, responses, scores = [], [], []
    for rollout in evaluator.sampler(policy, tokens, prompts, seeded(evaluator.seed), "best-of-n eval", Timer()):
        texts += rollout.texts
        responses += rollout.responses
        scores.append(rollout.scores.float().cpu())
    all_scores = torch.cat(scores)
    keep = best_indices(all_scores, n).tolist()
    kept = [texts[i] for i in keep]
    extra = {"reward": all_scores[keep]}
    if evaluator.gold_fn is not None:
        extra["gold"] = check_scores(evaluator.gold_fn(kept), len(kept), "best-of-n eval (gold_fn)")
    for name, fn in evaluator.eval_fns.items():
        extra[name] = check_scores(fn(kept), len(kept), f"best-of-n eval ({name})")
    samples = [
        {"prompt": prompts[i], "response": responses[i], **{k: float(v[j]) for k, v in extra.items()}}
        for j, i in enumerate(keep)
    ]
    row = eval_metrics([best_of_n_kl(n)] * len(samples), samples)
    row.update({"eval/best_of_n": float(n), "eval/reward_mean_of_n": float(all_scores.mean())})
    return row, samples


def best_of_n(
    policy: tuple[torch.nn.Module, object],
    reward_fn,
    eval_prompts: list[str],
    n: int,
    config: PPOConfig | None = None,
    gold_fn=None,
    *,
    eval_fns: dict | None = None,
) -> tuple[dict, list[dict]]:
    """Best-of-``n`` of ``policy`` (a ``(model, tokenizer)`` pair) against ``reward_fn`` on ``eval_prompts``,
    with the sampler, seed and scorers a PPO run with ``config`` would evaluate with (no training)."""
    from rl_finetune.ppo.trainer import PPOTrainer

    trainer = PPOTrainer(
        policy, reward_fn, list(eval_prompts), config or PPOConfig(), eval_prompts=eval_prompts, gold_fn=gold_fn,
        eval_fns=eval_fns, progress=False,
    )  # fmt: skip
    return evaluate_best_of_n(trainer.evaluator, trainer.unwrapped, n)
