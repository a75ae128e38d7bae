"""DPOConfig and KTOConfig: the knobs of the offline learners (sections ``dpo`` and ``kto``).

Both share :class:`OfflineConfig` (run length, batches, optimiser, partial training, evaluation, speed);
each adds only its loss's own keys. Names follow TRL where TRL's name says what the knob is (``beta``,
``desirable_weight``, ``undesirable_weight``, ``max_prompt_length`` is our ``max_prompt_tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from common.config import check_ranges
from common.errors import ConfigError
from rl_finetune.ppo.config import GenKwargs


@dataclass
class OfflineConfig:
    SECTION: ClassVar[str] = "offline"

    # -- the loss --------------------------------------------------------------------------------
    beta: float = field(
        default=0.1, metadata={"help": "KL leash: the implicit reward is beta * (log pi - log ref) (TRL default 0.1)"}
    )

    # -- run length and batches ------------------------------------------------------------------
    epochs: float = field(default=1.0, metadata={"help": "passes over the labelled examples (fractions allowed)"})
    max_steps: int | None = field(
        default=None, metadata={"help": "optimiser steps, cycling over the examples (overrides epochs, as in TRL)"}
    )
    max_minutes: float | None = field(
        default=None,
        metadata={"help": "time budget in minutes from loading the policy, reference pass included (None: none)"},
    )
    batch_size: int = field(default=8, metadata={"help": "examples (DPO: pairs) per forward pass"})
    grad_accum: int = field(default=1, metadata={"help": "forward passes per optimiser step"})
    max_prompt_tokens: int = field(default=24, metadata={"help": "prompts are cut from the left to this many tokens"})
    max_completion_tokens: int = field(
        default=32, metadata={"help": "completions are cut from the right to this many tokens"}
    )

    # -- optimiser and partial training ----------------------------------------------------------
    lr: float = field(default=5e-5, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999], metadata={"help": "AdamW betas"})
    max_grad_norm: float | None = field(
        default=1.0, metadata={"help": "clip the global gradient norm to this (None: no clipping)"}
    )
    num_layers_unfrozen: int = field(
        default=-1,
        metadata={
            "help": "train only the top N transformer blocks (-1: all; embeddings and LM head frozen when N >= 0)"
        },
    )
    cache_trunk: bool = field(
        default=True,
        metadata={
            "help": "with 0 < num_layers_unfrozen < layers: keep the frozen bottom's output of every example from the "
            "reference pass, so training runs only the top blocks (memory: tokens x hidden x 4 bytes per sequence)"
        },
    )

    # -- evaluation and output -------------------------------------------------------------------
    eval_every: int = field(
        default=10, metadata={"help": "call the eval every N optimiser steps (and at 0 and the end)"}
    )
    num_eval_prompts: int = field(
        default=64, metadata={"help": "CLI only: held-out prompts sampled at each eval (IMDB test split)"}
    )
    eval_batch_size: int = field(default=32, metadata={"help": "CLI only: eval prompts sampled per batch"})
    gen_kwargs: GenKwargs = field(
        default_factory=GenKwargs, metadata={"help": "CLI only: how eval responses are sampled (as PPO's)"}
    )
    num_samples_report: int = field(default=8, metadata={"help": "CLI only: eval prompts shown in samples.md"})
    seed: int = field(default=0, metadata={"help": "random seed (batch order, eval sampling)"})

    # -- speed -----------------------------------------------------------------------------------
    mixed_precision: Literal["no", "bf16", "fp16"] = field(
        default="bf16", metadata={"help": "autocast through accelerate, as PPO"}
    )
    num_threads: int | None = field(default=None, metadata={"help": "torch threads (None: all cores)"})

    def validate(self) -> None:
        s = self.SECTION
        check_ranges(
            self, s, positive=("lr", "beta", "epochs"), positive_or_null=("max_minutes", "max_grad_norm"),
            non_negative=("seed", "weight_decay"),
            at_least_one=("batch_size", "grad_accum", "max_prompt_tokens", "max_completion_tokens", "eval_every",
                          "num_eval_prompts", "eval_batch_size", "max_steps"),
            betas=("adam_betas",),
        )  # fmt: skip
        if self.num_layers_unfrozen < -1 or self.num_layers_unfrozen == 0:
            raise ConfigError(
                f"{s}.num_layers_unfrozen={self.num_layers_unfrozen} leaves nothing to train.",
                f"set {s}.num_layers_unfrozen to -1 (every layer) or a number of top blocks >= 1, e.g. 2.",
            )
        if self.gen_kwargs.max_new_tokens < 1 or self.gen_kwargs.temperature <= 0:
            raise ConfigError(
                f"{s}.gen_kwargs needs max_new_tokens >= 1 and temperature > 0.", "use e.g. {max_new_tokens: 32}."
            )
        if self.gen_kwargs.top_k != 0 or self.gen_kwargs.top_p != 1.0:
            raise ConfigError(
                f"{s}.gen_kwargs.top_k/top_p must stay 0/1.0 (the eval's KL is sampled from the full distribution).",
                "use temperature instead.",
            )


@dataclass
class DPOConfig(OfflineConfig):
    """DPO (Rafailov et al. 2023) from preference pairs: the sigmoid loss ``-log sigmoid(beta * margin)``."""

    SECTION: ClassVar[str] = "dpo"


@dataclass
class KTOConfig(OfflineConfig):
    """KTO (Ethayarajh et al. 2024) from good/bad labels of single completions."""

    SECTION: ClassVar[str] = "kto"

    desirable_weight: float | None = field(
        default=None,
        metadata={
            "help": "lambda_D, the weight of good completions (None: weight_ratio * n_bad / n_good, which balances "
            "unequal classes as the paper advises)"
        },
    )
    undesirable_weight: float = field(default=1.0, metadata={"help": "lambda_U, the weight of bad completions"})
    weight_ratio: float = field(
        default=1.0,
        metadata={"help": "with desirable_weight None: lambda_D * n_good / (lambda_U * n_bad), in [1, 4/3]"},
    )

    def validate(self) -> None:
        super().validate()
        check_ranges(self, "kto", positive=("undesirable_weight",), positive_or_null=("desirable_weight",))
        if not 1.0 <= self.weight_ratio <= 4 / 3:
            raise ConfigError(
                f"kto.weight_ratio={self.weight_ratio} is outside KTO's recommended [1, 4/3].", "use e.g. 1.0."
            )
