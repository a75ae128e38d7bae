"""CompareConfig: the ``compare`` section, which learners ``python -m rl_finetune compare`` runs and for how long."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from common.config import check_ranges
from common.errors import ConfigError

#: Every method the compare run knows, in the order the report lists them.
METHODS = ("ppo", "rloo", "grpo", "best_of_n", "kto", "dpo")
Method = Literal["ppo", "rloo", "grpo", "best_of_n", "kto", "dpo"]


@dataclass
class CompareConfig:
    methods: list[Method] = field(
        default_factory=lambda: list(METHODS),
        metadata={"help": f"the methods to run, from {', '.join(METHODS)}"},
    )
    seconds: float = field(
        default=300.0,
        metadata={
            "help": "training budget per method in seconds (ppo, rloo, grpo: max_minutes; kto, dpo: time_budget_s)"
        },
    )
    seconds_per_method: dict[str, float] = field(
        default_factory=dict, metadata={"help": "a budget for one method instead of `seconds`, e.g. {dpo: 120}"}
    )
    eval_prompts: int = field(
        default=64, metadata={"help": "held-out prompts every method is scored on (IMDB test split)"}
    )
    best_of_n: list[int] = field(
        default_factory=lambda: [1, 2, 4, 8, 16], metadata={"help": "the n of best-of-n, one frontier point each"}
    )
    gold_target: float = field(
        default=0.85, metadata={"help": "the gold positive rate the report asks of each method (lowest KL, least time)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of every method (sampling, prompts, eval)"})

    def budget(self, method: str) -> float:
        """Training seconds of ``method``."""
        return float(self.seconds_per_method.get(method, self.seconds))

    def validate(self) -> None:
        check_ranges(self, "compare", positive=("seconds",), non_negative=("seed",), at_least_one=("eval_prompts",))
        if not self.methods:
            raise ConfigError("compare.methods is empty.", f"list one or more of {', '.join(METHODS)}.")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"compare.methods={self.methods} names a method twice.", "list each method once.")
        unknown = sorted(set(self.seconds_per_method) - set(METHODS))
        if unknown:
            raise ConfigError(
                f"compare.seconds_per_method names unknown method {unknown[0]!r}.", f"use {', '.join(METHODS)}."
            )
        if any(not s > 0 for s in self.seconds_per_method.values()):
            raise ConfigError("compare.seconds_per_method must be > 0 seconds.", "give each method a positive budget.")
        if not self.best_of_n or any(n < 1 for n in self.best_of_n):
            raise ConfigError(f"compare.best_of_n={self.best_of_n} must list n >= 1.", "e.g. [1, 2, 4, 8, 16].")
        if not 0 < self.gold_target <= 1:
            raise ConfigError(f"compare.gold_target={self.gold_target} is not in (0, 1].", "e.g. 0.85.")


def parse_methods(text: str) -> list[str]:
    """``--methods ppo,dpo`` as a list, each name checked (an unknown one is a one-line error)."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    for name in names:
        if name not in METHODS:
            close = [m for m in METHODS if m.replace("_", "-") == name or m.startswith(name[:3])]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown method {name!r}{hint}.", f"use one or more of {', '.join(METHODS)}.")
    return names
