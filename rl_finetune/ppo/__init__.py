"""Our own PPO for RLHF, readable top to bottom (see docs/ppo.md).

    from base_policy.loading import load_policy
    from rl_finetune.ppo import PPOConfig, train, save_policy
    result = train(load_policy("artifacts/base_policy"), reward_fn, prompts, PPOConfig(total_steps=100), eval_prompts=held_out)
    save_policy(result, "artifacts/policies/my-run")

- ``config``: :class:`PPOConfig` (trlx's knob names)
- ``core``: the algorithm as small pure functions (GAE, whitening, KL, losses, statistics)
- ``kl``: fixed and adaptive KL controllers
- ``rollout``: the prompt stream, prompt batches, KV-cache sampling, sample-and-score (:class:`Sampler`)
- ``trainer``: the loop (:func:`train`, :func:`save_policy`), one step a list of named calls
- ``evaluate``: the eval prompts, sampled and scored the same way at every eval
- ``checkpoint``: resumable checkpoints
- ``distributed``: accelerate housekeeping (reductions over processes, the optimiser step)
- ``stage``: stage 4 in one call (:func:`run_stage`: load, train, save, point ``latest``, register)
- ``report``: metrics.jsonl, plots, samples.md
- ``cli``: ``python -m rl_finetune ppo``
"""

from rl_finetune.ppo.config import GenKwargs, PPOConfig
from rl_finetune.ppo.stage import StageResult, run_stage
from rl_finetune.ppo.trainer import PPOResult, PPOTrainer, save_policy, train

__all__ = ["GenKwargs", "PPOConfig", "PPOResult", "PPOTrainer", "StageResult", "run_stage", "save_policy", "train"]
