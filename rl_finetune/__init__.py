"""The policy side of RLHF: the base policy (pretrained offline on IMDB, or a hub model),
generation for the labelling queue, and PPO against a learned reward.

``python -m rl_finetune pretrain|generate|ppo``; see ``docs/base_policy.md``. Importing the
package is cheap: the submodules load torch and transformers when used.
"""
