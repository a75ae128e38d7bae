"""Our own PPO for RLHF, readable top to bottom (see docs/ppo.md).

    from rl_finetune.ppo import PPOConfig, train, save_policy
    result = train("artifacts/base_policy", reward_fn, prompts, PPOConfig(total_steps=100), eval_prompts=held_out)
    save_policy(result, "artifacts/policies/my-run")

- ``config``: :class:`PPOConfig` (trlx's knob names)
- ``core``: the algorithm as small pure functions (GAE, whitening, KL, losses, statistics)
- ``kl``: fixed and adaptive KL controllers
- ``rollout``: prompt batches and KV-cache sampling
- ``trainer``: the loop (:func:`train`, :func:`save_policy`)
- ``report``: metrics.jsonl, plots, samples.md
- ``cli``: ``python -m rl_finetune ppo``
"""

from rl_finetune.ppo.config import GenKwargs, PPOConfig
from rl_finetune.ppo.trainer import PPOResult, PPOTrainer, save_policy, train

__all__ = ["GenKwargs", "PPOConfig", "PPOResult", "PPOTrainer", "save_policy", "train"]
