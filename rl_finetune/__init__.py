"""Stage 4, RL fine-tuning: the policy learns from the reward model, on a KL leash to where it started.

``python -m rl_finetune ppo`` (``make finetune``); the library is :mod:`rl_finetune.ppo`
(``train``, ``save_policy``, ``PPOConfig``). The learners see the reward only as
``reward_fn(texts) -> scores``. Importing the package is cheap: torch loads when a submodule is used.
"""
