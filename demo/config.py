"""DemoConfig: the ``demo`` section of a profile."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from common.errors import ConfigError
from common.gold import GoldConfig
from labeling_app.simulate import SimulateConfig


@dataclass
class DemoConfig:
    """The whole loop with simulated labellers: how many labels, rounds, and the gold judge.

    Stage settings come from the profile's own sections (``pretrain``, ``generate``, ``reward``,
    ``ppo``); the ``*_set`` lists below override them for the demo only (``key=value`` strings).
    """

    n_labels: int = field(default=1000, metadata={"help": "judgements the simulated labellers record per round"})
    rounds: int = field(
        default=1,
        metadata={
            "help": "labelling rounds; round 2+ labels the newest policy's completions and trains again (Ziegler et al.'s iterated loop)"
        },
    )
    n_prompts: int | None = field(
        default=None,
        metadata={"help": "completions generated for labelling per round; null = ceil(n_labels / overlap)"},
    )
    n_eval_prompts: int = field(
        default=64, metadata={"help": "held-out IMDB test openings scored before and after (the same prompts)"}
    )
    n_report_samples: int = field(default=8, metadata={"help": "before/after samples printed in the report"})
    base_policy: str = field(
        default="auto",
        metadata={"help": "auto = reuse $RLHF_ARTIFACTS/base_policy or pretrain it; or a model folder / hub name"},
    )
    seed: int = field(default=0, metadata={"help": "seed of prompt choice and generation"})
    simulate: SimulateConfig = field(
        default_factory=SimulateConfig,
        metadata={"help": "the simulated labellers (n_labels here is replaced by demo.n_labels)"},
    )
    gold: GoldConfig = field(
        default_factory=GoldConfig, metadata={"help": "the gold judge (TF-IDF + logistic regression)"}
    )
    overoptimization: bool = field(
        default=False,
        metadata={
            "help": "also run PPO with a tiny KL coefficient and plot proxy reward and gold score against sqrt(KL)"
        },
    )
    overopt_kl_coef: float = field(
        default=0.0, metadata={"help": "KL coefficient of the over-optimisation run (0 = no KL penalty)"}
    )
    overopt_steps: int | None = field(
        default=None, metadata={"help": "PPO steps of the over-optimisation run; null = ppo.total_steps"}
    )
    pretrain_set: list[str] = field(
        default_factory=list, metadata={"help": "pretrain overrides for the demo (key=value)"}
    )
    generate_set: list[str] = field(
        default_factory=list, metadata={"help": "generate overrides for the demo (key=value)"}
    )
    reward_set: list[str] = field(default_factory=list, metadata={"help": "reward overrides for the demo (key=value)"})
    ppo_set: list[str] = field(default_factory=list, metadata={"help": "ppo overrides for the demo (key=value)"})

    @property
    def completions_per_round(self) -> int:
        """Completions to generate so ``n_labels`` judgements fit with the overlap."""
        if self.n_prompts is not None:
            return self.n_prompts
        return max(1, math.ceil(self.n_labels / self.simulate.overlap))

    def validate(self) -> None:
        if self.n_labels < 2:
            raise ConfigError(f"demo.n_labels={self.n_labels} is too few to train on.", "use e.g. 1000 (smoke: 60).")
        if self.rounds < 1:
            raise ConfigError(f"demo.rounds={self.rounds} must be >= 1.", "use 1 or 2.")
        if self.n_eval_prompts < 1:
            raise ConfigError(f"demo.n_eval_prompts={self.n_eval_prompts} must be >= 1.", "use e.g. 64.")
        if self.n_prompts is not None and self.n_prompts * self.simulate.overlap < self.n_labels:
            raise ConfigError(
                f"demo.n_prompts={self.n_prompts} x overlap {self.simulate.overlap} cannot hold n_labels={self.n_labels}.",
                "raise n_prompts or set it to null (derived).",
            )
        if self.overopt_kl_coef < 0:
            raise ConfigError(f"demo.overopt_kl_coef={self.overopt_kl_coef} must be >= 0.", "use 0 or e.g. 0.001.")
        self.simulate.validate()
        self.gold.validate()
