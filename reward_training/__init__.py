"""Stage 3, the reward model: an IMDB-seeded sequence classifier learned from the human judgements.

- ``train(cfg, engine) -> Path``: seed on IMDB snippets (cached), fine-tune on the labels, evaluate, save.
- ``load_reward_fn(path, kind=...) -> Callable[[list[str]], torch.Tensor]``: scores for PPO.
- ``reward_model(strings, path=None) -> dict[str, float]``: the course's API, P(good) per string.
- ``score_completions(engine, path)``: P(good) of unlabelled completions into the database.

``reward_training.config``, ``reward_training.evaluate`` (numpy metrics) and ``reward_training.reliability``
(Dawid–Skene labeller reliability, numpy only) may be imported by other stages too.

Imports are lazy so ``import reward_training`` stays cheap.
"""

from __future__ import annotations

__all__ = ["RewardConfig", "train", "load_reward_fn", "reward_model", "score_completions"]


def __getattr__(name: str):
    if name == "RewardConfig":
        from reward_training.config import RewardConfig

        return RewardConfig
    if name == "train":
        from reward_training.training import train

        return train
    if name in ("load_reward_fn", "reward_model", "score_completions"):
        from reward_training import api

        return getattr(api, name)
    raise AttributeError(f"module 'reward_training' has no attribute {name!r}")
