"""PPOConfig: every knob of the PPO stage, named as in trlx where trlx's name says what the knob is.

Same as trlx: ``init_kl_coef``, ``gamma``, ``lam``, ``cliprange``, ``cliprange_value``, ``vf_coef``,
``ppo_epochs``, ``num_rollouts``, ``gen_kwargs``, ``scale_reward``, ``cliprange_reward`` and
``num_layers_unfrozen``. Renamed (``RENAMED``; docs/ppo.md has the table): trlx's ``batch_size`` is our
``minibatch_size``, ``chunk_size`` is ``generation_batch_size``, ``target`` is ``kl_target`` and
``horizon`` is ``kl_horizon``. Derived values are properties.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from common.config import check_ranges
from common.errors import ConfigError


@dataclass
class GenKwargs:
    """How responses are sampled. Pure sampling (no top-k/top-p) keeps the KL estimate honest."""

    max_new_tokens: int = field(
        default=32, metadata={"help": "response length in tokens (the cap when stopping at EOS)"}
    )
    min_new_tokens: int = field(
        default=0, metadata={"help": "EOS is forbidden before this many tokens (0: never forbidden)"}
    )
    temperature: float = field(
        default=1.0, metadata={"help": "sampling temperature; log-probs use logits / temperature too"}
    )
    top_k: int = field(
        default=0, metadata={"help": "0 = off (keep 0: top-k makes the sampled KL biased, even negative)"}
    )
    top_p: float = field(default=1.0, metadata={"help": "1.0 = off (keep 1.0, same reason as top_k)"})
    stop_at_eos: bool = field(
        default=True, metadata={"help": "end a response at the policy's EOS token (masked after it)"}
    )


@dataclass
class PPOConfig:
    # -- run length and batch shapes -------------------------------------------------------------
    total_steps: int = field(
        default=200,
        metadata={"help": "PPO iterations (one rollout of num_rollouts episodes + ppo_epochs of updates each)"},
    )
    max_minutes: float | None = field(
        default=None, metadata={"help": "stop after this many minutes of wall time (None: no limit)"}
    )
    num_rollouts: int = field(
        default=16, metadata={"help": "episodes (prompt + response) collected per PPO iteration, per process"}
    )
    generation_batch_size: int = field(
        default=16,
        metadata={"help": "episodes generated (and scored) in one batch during a rollout (trlx: chunk_size)"},
    )
    minibatch_size: int = field(
        default=16,
        metadata={
            "help": "episodes per PPO update (num_rollouts / minibatch_size minibatches per epoch; trlx: batch_size)"
        },
    )
    ppo_epochs: int = field(default=4, metadata={"help": "passes over each rollout"})
    max_prompt_tokens: int = field(default=24, metadata={"help": "prompts are cut from the left to this many tokens"})
    gen_kwargs: GenKwargs = field(default_factory=GenKwargs, metadata={"help": "sampling settings"})

    # -- optimiser -------------------------------------------------------------------------------
    lr: float = field(default=3e-5, metadata={"help": "AdamW learning rate (policy and value head)"})
    value_head_lr: float | None = field(
        default=None,
        metadata={
            "help": "learning rate of the (zero-initialised) value head (None: lr); ARENA uses a larger one for the head"
        },
    )
    weight_decay: float = field(default=1e-6, metadata={"help": "AdamW weight decay (trlx default)"})
    adam_betas: list[float] = field(
        default_factory=lambda: [0.9, 0.95], metadata={"help": "AdamW betas (trlx default)"}
    )
    adam_eps: float = field(default=1e-8, metadata={"help": "AdamW epsilon"})
    max_grad_norm: float | None = field(
        default=1.0, metadata={"help": "clip the global gradient norm to this (None: no clipping)"}
    )
    num_layers_unfrozen: int = field(
        default=-1,
        metadata={
            "help": "train only the top N transformer blocks (-1: all; embeddings and LM head frozen when N >= 0)"
        },
    )
    shared_trunk: bool = field(
        default=True,
        metadata={
            "help": "with 0 <= num_layers_unfrozen < layers: run the frozen bottom once per rollout and share it with "
            "the reference, which keeps a copy of the top blocks only (trlx's hydra); false: a full reference copy"
        },
    )
    lora_r: int = field(
        default=0,
        metadata={
            "help": "LoRA rank (peft): train rank-r adapters on lora_target in the trainable layers (num_layers_unfrozen; "
            "-1: all) instead of the layers; the reference is the model with its adapters off, no copy (0: off)"
        },
    )
    lora_alpha: float | None = field(
        default=None, metadata={"help": "LoRA scale: an adapter adds (lora_alpha / lora_r) * B A (None: 2 * lora_r)"}
    )
    lora_dropout: float = field(
        default=0.0,
        metadata={
            "help": "dropout on the adapters' input in the PPO updates only (sampling, old log-probs, eval: none)"
        },
    )
    lora_target: list[str] | None = field(
        default=None,
        metadata={
            "help": "names of the layers that get adapters, e.g. [q_proj, v_proj] (None: every linear layer in the "
            "blocks: GPT-2 c_attn, c_proj, c_fc; Llama q/k/v/o_proj, gate/up/down_proj)"
        },
    )

    # -- PPO -------------------------------------------------------------------------------------
    gamma: float = field(default=1.0, metadata={"help": "discount"})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda"})
    cliprange: float = field(default=0.2, metadata={"help": "policy ratio clip"})
    cliprange_value: float = field(default=0.2, metadata={"help": "value clip around the rollout's values"})
    vf_coef: float = field(default=1.0, metadata={"help": "value loss weight"})
    ent_coef: float = field(default=0.0, metadata={"help": "entropy bonus weight (0: none, as in trlx)"})
    whiten_advantages: bool = field(
        default=True, metadata={"help": "whiten advantages over the rollout's response tokens"}
    )
    target_kl_early_stop: float | None = field(
        default=None,
        metadata={
            "help": "stop the remaining PPO epochs of a rollout once the approx-KL of a minibatch exceeds this (None: never)"
        },
    )

    # -- learner (docs/ppo.md, "Other learners") --------------------------------------------------
    algorithm: Literal["ppo", "rloo", "grpo"] = field(
        default="ppo",
        metadata={
            "help": "ppo: GAE with a value head; rloo: leave-one-out baseline over the k samples of a prompt; "
            "grpo: group-normalised advantages (both critic-free: no value loss)"
        },
    )
    samples_per_prompt: int | None = field(
        default=None,
        metadata={
            "help": "k responses sampled per prompt (num_rollouts / k prompts per step; None: 1 for ppo, 4 for rloo/grpo)"
        },
    )
    kl_penalty: Literal["reward", "loss"] = field(
        default="reward",
        metadata={
            "help": "rloo/grpo: the KL (kl_estimator, coefficient kl_coef) in the reward (score - beta * sum KL, as RLOO) "
            "or as a loss term (+ beta * mean KL per token, as GRPO; use kl_estimator=k3); ppo: reward only"
        },
    )
    grpo_scale_std: bool = field(
        default=True, metadata={"help": "grpo: divide by the group's std (false: only subtract its mean, Dr. GRPO)"}
    )

    # -- reward and KL ---------------------------------------------------------------------------
    init_kl_coef: float = field(default=0.05, metadata={"help": "KL penalty coefficient (beta) at the start"})
    kl_target: float | None = field(
        default=None,
        metadata={"help": "adaptive KL: target KL per sample in nats (None: fixed coefficient; trlx: target)"},
    )
    kl_horizon: int | None = field(
        default=None, metadata={"help": "adaptive KL: horizon in episodes (required with kl_target; trlx: horizon)"}
    )
    kl_coef_min: float | None = field(
        default=None,
        metadata={
            "help": "adaptive KL: beta never falls below this, nor below init_kl_coef if that is smaller (None: no floor, "
            "as Ziegler and trlx); with a short kl_horizon, set it to init_kl_coef so that beta is not lowered while "
            "the KL is still climbing"
        },
    )
    kl_loss_coef: float = field(
        default=0.0,
        metadata={
            "help": "weight of the exact KL(policy || reference) over the whole vocabulary, per response token, added to the PPO loss (0: off; not in trlx): a noise-free pull back to the reference beside the KL penalty in the reward"
        },
    )
    kl_estimator: Literal["k1", "k3"] = field(
        default="k1", metadata={"help": "per-token KL penalty: k1 = log-ratio, k3 = exp(-r) - 1 + r (always >= 0)"}
    )
    scale_reward: Literal["none", "running", "whiten"] | None = field(
        default=None,
        metadata={"help": "scale scores: none, running (divide by running std), whiten (per-batch mean 0, std 1)"},
    )
    cliprange_reward: float = field(default=10.0, metadata={"help": "clip (scaled) scores to +/- this"})

    # -- evaluation and output -------------------------------------------------------------------
    eval_interval: int = field(
        default=10, metadata={"help": "score the eval prompts every N steps (and at the start and end)"}
    )
    num_eval_prompts: int = field(
        default=64, metadata={"help": "held-out eval prompts (the CLI takes them from the IMDB test split)"}
    )
    num_train_prompts: int = field(
        default=2000, metadata={"help": "training prompts (the CLI takes them from the IMDB train split)"}
    )
    num_samples_report: int = field(default=8, metadata={"help": "eval prompts shown before/after in samples.md"})
    checkpoint_interval: int = field(
        default=50, metadata={"help": "save a resumable checkpoint every N steps (0: never)"}
    )
    seed: int = field(default=0, metadata={"help": "random seed"})

    # -- speed -----------------------------------------------------------------------------------
    mixed_precision: Literal["no", "bf16", "fp16"] = field(
        default="bf16",
        metadata={"help": "autocast through accelerate (bf16 roughly doubles matmul speed on recent CPUs)"},
    )
    num_threads: int | None = field(
        default=None,
        metadata={"help": "torch threads per process for the forward/backward passes (None: cores / processes)"},
    )
    sample_threads: int | None = field(
        default=None,
        metadata={
            "help": "torch threads while sampling token by token (None: same as num_threads). 1 suits tiny models, "
            "whose per-token ops lose more to thread sync than they gain; a 135M model samples faster on all cores "
            "(docs/ppo.md)"
        },
    )
    reward_kind: Literal["prob", "logit", "logit_diff"] = field(
        default="logit_diff",
        metadata={"help": "CLI only: what the learned reward model's score is (load_reward_fn kind)"},
    )
    reward_batch_size: int = field(default=32, metadata={"help": "CLI only: texts per reward model call"})
    reward_conservative_k: float | None = field(
        default=None,
        metadata={
            "help": "CLI only: train on the conservative reward, the reward ensemble's mean - k x its spread "
            "(docs/reward_model.md); null = the reward model's saved reward.conservative_k, 0 = the mean. "
            "The logged p_good stays the ensemble mean"
        },
    )

    RENAMED: ClassVar[dict[str, str]] = {
        "batch_size": "minibatch_size",
        "chunk_size": "generation_batch_size",
        "target": "kl_target",
        "horizon": "kl_horizon",
    }

    @property
    def minibatches_per_epoch(self) -> int:
        return self.num_rollouts // self.minibatch_size

    @property
    def lora_scale_alpha(self) -> float:
        """``lora_alpha``, or ``2 * lora_r`` when it is None."""
        return self.lora_alpha if self.lora_alpha is not None else 2.0 * self.lora_r

    @property
    def k(self) -> int:
        """Samples per prompt: ``samples_per_prompt``, or 1 for ppo and 4 for rloo/grpo when it is None."""
        if self.samples_per_prompt is not None:
            return self.samples_per_prompt
        return 1 if self.algorithm == "ppo" else 4

    def validate(self) -> None:
        check_ranges(
            self, "ppo", positive=("lr", "adam_eps", "cliprange", "cliprange_value", "cliprange_reward"),
            positive_or_null=("max_minutes", "value_head_lr", "max_grad_norm", "target_kl_early_stop"),
            non_negative=("seed", "weight_decay", "vf_coef", "reward_conservative_k", "kl_coef_min"),
            at_least_one=("num_train_prompts", "num_eval_prompts", "eval_interval", "reward_batch_size"),
            betas=("adam_betas",),
        )  # fmt: skip
        if self.kl_target is not None and self.kl_horizon is None:
            raise ConfigError(
                f"ppo.kl_target={self.kl_target} is set but ppo.kl_horizon is not.",
                "an adaptive KL controller needs both: set ppo.kl_horizon (e.g. 10000 episodes) or unset ppo.kl_target for a fixed coefficient.",
            )
        if self.kl_target is not None and self.kl_target <= 0:
            raise ConfigError(
                f"ppo.kl_target={self.kl_target} must be > 0.", "set a positive KL target in nats, e.g. 6."
            )
        if self.kl_horizon is not None and self.kl_horizon <= 0:
            raise ConfigError(
                f"ppo.kl_horizon={self.kl_horizon} must be > 0.", "set it to a number of episodes, e.g. 10000."
            )
        if self.num_rollouts <= 0 or self.minibatch_size <= 0 or self.generation_batch_size <= 0:
            raise ConfigError(
                "ppo.num_rollouts, minibatch_size and generation_batch_size must be > 0.", "use positive sizes."
            )
        if self.num_rollouts % self.minibatch_size:
            raise ConfigError(
                f"ppo.num_rollouts={self.num_rollouts} is not a multiple of ppo.minibatch_size={self.minibatch_size}.",
                "make num_rollouts a multiple of minibatch_size (minibatch_size = num_rollouts gives one minibatch).",
            )
        if self.ppo_epochs < 1 or self.total_steps < 1:
            raise ConfigError("ppo.ppo_epochs and ppo.total_steps must be >= 1.", "use positive counts.")
        if self.gen_kwargs.max_new_tokens < 1:
            raise ConfigError("ppo.gen_kwargs.max_new_tokens must be >= 1.", "sample at least one token.")
        if self.gen_kwargs.temperature <= 0:
            raise ConfigError("ppo.gen_kwargs.temperature must be > 0.", "use e.g. 1.0.")
        if self.gen_kwargs.top_k != 0 or self.gen_kwargs.top_p != 1.0:
            raise ConfigError(
                "ppo.gen_kwargs.top_k/top_p must stay 0/1.0 (sampling from the full distribution).",
                "top-k/top-p sampling biases the KL estimate (it can go negative); use temperature instead.",
            )
        if not 0 <= self.lam <= 1 or not 0 <= self.gamma <= 1:
            raise ConfigError("ppo.gamma and ppo.lam must lie in [0, 1].", "use e.g. gamma=1, lam=0.95.")
        if self.kl_loss_coef < 0 or self.ent_coef < 0:
            raise ConfigError("ppo.kl_loss_coef and ppo.ent_coef must be >= 0.", "use 0 to turn them off.")
        if len(self.adam_betas) != 2:
            raise ConfigError("ppo.adam_betas must hold two numbers.", "e.g. [0.9, 0.95].")
        self._validate_learner()
        self._validate_lora()

    def _validate_lora(self) -> None:
        if self.lora_r < 0:
            raise ConfigError(
                f"ppo.lora_r={self.lora_r} must be >= 0.", "set ppo.lora_r to 0 (no LoRA) or a rank, e.g. 8."
            )
        if self.lora_r == 0:
            return
        if self.num_layers_unfrozen == 0:
            raise ConfigError(
                "ppo.lora_r > 0 with ppo.num_layers_unfrozen=0 puts adapters in no layer.",
                "set ppo.num_layers_unfrozen to the number of top layers that get adapters (-1: all), or ppo.lora_r=0.",
            )
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            raise ConfigError(
                f"ppo.lora_alpha={self.lora_alpha} must be > 0.", "set it to e.g. 16, or null (2 * lora_r)."
            )
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"ppo.lora_dropout={self.lora_dropout} must lie in [0, 1).", "use e.g. 0.0 or 0.05.")
        if self.lora_target is not None and not self.lora_target:
            raise ConfigError(
                "ppo.lora_target is an empty list.",
                "name the layers, e.g. [q_proj, v_proj], or null for every linear layer.",
            )

    def _validate_learner(self) -> None:
        if self.samples_per_prompt is not None and self.samples_per_prompt < 1:
            raise ConfigError(
                f"ppo.samples_per_prompt={self.samples_per_prompt} must be >= 1.", "set it to e.g. 4, or null."
            )
        if self.algorithm == "rloo" and self.k < 2:
            raise ConfigError(
                f"ppo.algorithm=rloo with ppo.samples_per_prompt={self.k} has no leave-one-out baseline.",
                "set ppo.samples_per_prompt to 2 or more (e.g. 4).",
            )
        if self.algorithm == "grpo" and self.k < 2:
            raise ConfigError(
                f"ppo.algorithm=grpo with ppo.samples_per_prompt={self.k} gives every sample advantage 0.",
                "set ppo.samples_per_prompt to 2 or more (e.g. 4).",
            )
        if self.num_rollouts % self.k:
            raise ConfigError(
                f"ppo.num_rollouts={self.num_rollouts} is not a multiple of ppo.samples_per_prompt={self.k}.",
                "make num_rollouts a multiple of samples_per_prompt (num_rollouts / k prompts per step).",
            )
        if self.algorithm == "ppo" and self.kl_penalty == "loss":
            raise ConfigError(
                "ppo.kl_penalty=loss is for algorithm=rloo or grpo; PPO keeps the KL in the reward.",
                "set ppo.kl_penalty=reward, or use ppo.kl_loss_coef for PPO's exact KL in the loss.",
            )
