"""Evaluation during a PPO run: the same eval prompts, sampled with the same seed every time, scored by
``reward_fn``, ``gold_fn`` (as ``gold``) and each of ``eval_fns``, with the KL per sample to the reference."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rl_finetune.ppo.report import Timer, eval_metrics
from rl_finetune.ppo.rollout import Rollout, Sampler, check_scores, seeded

RewardFn = Callable[[list[str]], object]


@dataclass
class Evaluator:
    sampler: Sampler
    prompts: list[str]
    tokens: list[list[int]]
    seed: int  # of the sampling generator, the same at every eval
    gold_fn: RewardFn | None = None
    eval_fns: dict[str, RewardFn] = field(default_factory=dict)

    @torch.no_grad()
    def __call__(self, policy, kl_per_sample: Callable[[Rollout], torch.Tensor]) -> tuple[dict, list[dict]]:
        """(the eval columns of a metrics row, one dict per sample: prompt, response and every score).

        ``policy``: the unwrapped :class:`PolicyWithValueHead`; ``kl_per_sample(rollout)``: (B,) KL to the reference."""
        if not self.prompts:
            return {}, []
        samples, kls = [], []
        batches = self.sampler(policy, self.tokens, self.prompts, seeded(self.seed), "eval", Timer())
        for c, rollout in enumerate(batches):
            kls += kl_per_sample(rollout).tolist()
            texts, extra = rollout.texts, {"reward": rollout.scores}
            if self.gold_fn is not None:
                extra["gold"] = check_scores(self.gold_fn(texts), len(texts), f"eval chunk {c} (gold_fn)")
            for name, fn in self.eval_fns.items():
                extra[name] = check_scores(fn(texts), len(texts), f"eval chunk {c} ({name})")
            for i, (p, r) in enumerate(zip(rollout.prompts, rollout.responses)):
                samples.append({"prompt": p, "response": r, **{k: float(v[i]) for k, v in extra.items()}})
        return eval_metrics(kls, samples), samples
