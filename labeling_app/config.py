"""The labelling app's typed config (profile section ``label``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from common.errors import ConfigError

DEFAULT_INSTRUCTIONS = "Good = a positive, coherent movie-review continuation"


@dataclass
class LabelConfig:
    instructions: str = field(
        default=DEFAULT_INSTRUCTIONS, metadata={"help": "the criterion shown above every item (plain text)"}
    )
    overlap: int = field(
        default=1, metadata={"help": "how many different labellers judge each item (k > 1 gives overlap for agreement)"}
    )
    order: Literal["random", "uncertain"] = field(
        default="random",
        metadata={
            "help": "queue order: 'random', or 'uncertain' first (newest reward model's probability closest to 0.5)"
        },
    )
    lease_seconds: int = field(
        default=600, metadata={"help": "how long an item shown to one session is reserved for it"}
    )
    prefetch: int = field(
        default=64,
        metadata={
            "help": "completions kept generated ahead in the queue: when fewer are left for a labeller "
            "a background refill starts (nothing is ever generated while a labeller waits)"
        },
    )
    refill_batch: int = field(default=128, metadata={"help": "how many completions one background refill generates"})
    auto_refill: bool = field(
        default=True, metadata={"help": "start a background refill automatically when the queue runs low"}
    )
    policy: str = field(
        default="latest",
        metadata={
            "help": "policy used for refills: 'latest' (newest policy registered in the database, else the "
            "newest PPO run, else the base policy) or a model folder"
        },
    )

    def validate(self) -> None:
        if not self.instructions.strip():
            raise ConfigError("label.instructions is empty.", "write the criterion labellers should apply.")
        if self.overlap < 1:
            raise ConfigError(f"label.overlap={self.overlap} must be at least 1.", "use 1 (no overlap) or k > 1.")
        if self.lease_seconds < 1:
            raise ConfigError(f"label.lease_seconds={self.lease_seconds} must be positive.", "use e.g. 600.")
        if self.prefetch < 0:
            raise ConfigError(f"label.prefetch={self.prefetch} must be >= 0.", "use e.g. 64 (0 turns auto refill off).")
        if self.refill_batch < 1:
            raise ConfigError(f"label.refill_batch={self.refill_batch} must be positive.", "use e.g. 128.")
        if not self.policy.strip():
            raise ConfigError("label.policy is empty.", "use 'latest' or a model folder.")
