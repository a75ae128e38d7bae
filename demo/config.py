"""The demo's settings: :class:`DemoConfig` (the ``demo`` section of a profile) and
:class:`Profile` (every section the demo runs, each loaded once)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from common.config import SECTIONS, load_config, read_profile, split_overrides
from common.errors import ConfigError
from common.gold import GoldConfig
from labeling_app.simulate import SimulateConfig


@dataclass
class PairsConfig:
    """The demo's pairwise round (``demo.pairs``, ``--pairwise``), after the PPO round(s): comparisons of the
    base policy's two completions of a prompt, judged by the same simulated labellers (``demo.simulate``),
    DPO from them (the ``dpo`` section), and comparisons of the base and the final PPO policy on held-out
    prompts, with the tuned policy's win rate."""

    enabled: bool = field(default=False, metadata={"help": "run the pairwise round (python -m demo --pairwise)"})
    n_labels: int = field(
        default=1000,
        metadata={
            "help": "pair judgements of the base policy's comparisons, DPO's training data "
            "(ceil(n_labels / overlap) comparisons, two completions of one prompt each)"
        },
    )
    n_versus_prompts: int = field(
        default=200,
        metadata={
            "help": "held-out IMDB test openings whose base-policy and final-PPO completions are compared "
            "(each comparison judged by `overlap` labellers): the win rate of the tuned policy"
        },
    )
    dpo_minutes: float | None = field(
        default=None, metadata={"help": "budget of the demo's DPO run (null = dpo.max_minutes)"}
    )
    n_report_samples: int = field(default=3, metadata={"help": "DPO before/after samples printed in the report"})

    def comparisons(self, overlap: int) -> int:
        """Comparisons to make so ``n_labels`` judgements fit with the overlap (the queue is then used up)."""
        return max(1, math.ceil(self.n_labels / overlap))

    def validate(self) -> None:
        if self.n_labels < 2:
            raise ConfigError(
                f"demo.pairs.n_labels={self.n_labels} is too few for DPO (it needs at least 2 pairs).",
                "use e.g. 1000 (smoke: 40).",
            )
        if self.n_versus_prompts < 1:
            raise ConfigError(
                f"demo.pairs.n_versus_prompts={self.n_versus_prompts} must be >= 1.", "use e.g. 200 (smoke: 8)."
            )
        if self.dpo_minutes is not None and not self.dpo_minutes > 0:
            raise ConfigError(
                f"demo.pairs.dpo_minutes={self.dpo_minutes} must be > 0.", "use e.g. 5, or null for dpo.max_minutes."
            )
        if self.n_report_samples < 0:
            raise ConfigError(f"demo.pairs.n_report_samples={self.n_report_samples} must be >= 0.", "use e.g. 3.")


@dataclass
class DemoConfig:
    """The whole loop with simulated labellers: how many labels, rounds, budgets, and the gold judge.

    Stage settings come from the profile's own sections (``pretrain``, ``generate``, ``reward``,
    ``ppo``, and ``dpo`` for the pairwise round), the same ones the stages' own commands read; this
    section holds only what is the demo's alone.
    """

    n_labels: int = field(default=1000, metadata={"help": "judgements the simulated labellers record per round"})
    rounds: int = field(
        default=1,
        metadata={
            "help": "labelling rounds; round 2+ labels the newest policy's completions and trains again (Ziegler et al.'s iterated loop)"
        },
    )
    n_completions: int | None = field(
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
    analysis: bool = field(
        default=True,
        metadata={
            "help": "end with `python -m rl_finetune analyse` of the final policy against the base policy "
            "(written to $RLHF_ARTIFACTS/analysis/demo-<run-id>, shown on the app's Analysis page)"
        },
    )
    analysis_prompts: int = field(
        default=16, metadata={"help": "held-out prompts of the analysis's statistics (the probes come on top)"}
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
    pretrain_minutes: float | None = field(
        default=None,
        metadata={
            "help": "budget of the base policy the demo pretrains when there is none (null = pretrain.max_minutes)"
        },
    )
    ppo_minutes: float | None = field(
        default=None, metadata={"help": "budget of each PPO run of the demo (null = ppo.max_minutes)"}
    )
    pairs: PairsConfig = field(
        default_factory=PairsConfig,
        metadata={"help": "the pairwise round: comparisons, DPO from them, base vs tuned win rate (--pairwise)"},
    )

    RENAMED: ClassVar[dict[str, str]] = {"n_prompts": "n_completions"}
    REMOVED: ClassVar[dict[str, str]] = {
        "pretrain_set": "the demo reads the pretrain section: set the demo's budget as demo.pretrain_minutes "
        "(e.g. pretrain_minutes: 5), other keys in pretrain (--set pretrain.KEY=VALUE).",
        "generate_set": "the demo reads the generate section: set keys there (--set generate.KEY=VALUE); "
        "the number of completions is demo.n_completions.",
        "reward_set": "the demo reads the reward section: set keys there (--set reward.KEY=VALUE).",
        "ppo_set": "the demo reads the ppo section: set the demo's budget as demo.ppo_minutes "
        "(e.g. ppo_minutes: 8), other keys in ppo (--set ppo.KEY=VALUE).",
    }

    @property
    def completions_per_round(self) -> int:
        """Completions to generate so ``n_labels`` judgements fit with the overlap."""
        if self.n_completions is not None:
            return self.n_completions
        return max(1, math.ceil(self.n_labels / self.simulate.overlap))

    def validate(self) -> None:
        if self.n_labels < 2:
            raise ConfigError(f"demo.n_labels={self.n_labels} is too few to train on.", "use e.g. 1000 (smoke: 60).")
        if self.rounds < 1:
            raise ConfigError(f"demo.rounds={self.rounds} must be >= 1.", "use 1 or 2.")
        if self.n_eval_prompts < 1:
            raise ConfigError(f"demo.n_eval_prompts={self.n_eval_prompts} must be >= 1.", "use e.g. 64.")
        if self.n_completions is not None and self.n_completions * self.simulate.overlap < self.n_labels:
            raise ConfigError(
                f"demo.n_completions={self.n_completions} x overlap {self.simulate.overlap} cannot hold n_labels={self.n_labels}.",
                "raise n_completions or set it to null (derived).",
            )
        for name in ("pretrain_minutes", "ppo_minutes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(
                    f"demo.{name}={value} must be > 0.", "use e.g. 5, or null for the stage's own budget."
                )
        if self.overopt_kl_coef < 0:
            raise ConfigError(f"demo.overopt_kl_coef={self.overopt_kl_coef} must be >= 0.", "use 0 or e.g. 0.001.")
        self.simulate.validate()
        self.gold.validate()
        self.pairs.validate()


@dataclass
class Profile:
    """Every section of one profile the demo runs, each loaded and validated once.

    The stage sections are the ones the stages' own commands read; the demo changes only what is
    its own (its budgets, per-round seeds) with ``dataclasses.replace`` where it calls a stage.
    """

    data: Any  # common.imdb.DataConfig
    pretrain: Any  # base_policy.pretrain.PretrainConfig
    generate: Any  # base_policy.generate.GenerateConfig
    reward: Any  # reward_training.config.RewardConfig
    ppo: Any  # rl_finetune.ppo.config.PPOConfig
    dpo: Any  # rl_finetune.offline.config.DPOConfig (the pairwise round's DPO)
    demo: DemoConfig

    @classmethod
    def load(cls, path: Path | str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Profile:
        """Read the profile (``RLHF_CONFIG`` when ``path`` is None) once and build each section.

        ``overrides`` are ``section.key=value`` (``reward.backbone=...``, ``ppo.lr=1e-4``); a key
        without a section is the demo's (``rounds=2``).
        """
        from base_policy.generate import GenerateConfig
        from base_policy.pretrain import PretrainConfig
        from common.imdb import DataConfig
        from reward_training.config import RewardConfig
        from rl_finetune.offline.config import DPOConfig
        from rl_finetune.ppo.config import PPOConfig

        classes = {
            "data": DataConfig,
            "pretrain": PretrainConfig,
            "generate": GenerateConfig,
            "reward": RewardConfig,
            "ppo": PPOConfig,
            "dpo": DPOConfig,
            "demo": DemoConfig,
        }
        sections = read_profile(path)
        by_section = split_overrides(overrides, default="demo")
        for name in by_section:
            if name not in classes:
                raise ConfigError(
                    f"the demo does not use the {name} section (override {name + '.' + by_section[name][0]!r}).",
                    f"override keys of {', '.join(s for s in SECTIONS if s in classes)}.",
                )
        return cls(**{name: load_config(c, name, sections, by_section.get(name, [])) for name, c in classes.items()})
