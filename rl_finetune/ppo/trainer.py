"""The PPO loop: ``train((model, tokenizer), reward_fn, prompts, config)``, in the order a student reads it.

One iteration, :meth:`PPOTrainer.train_step`, is a list of named calls:
  1. ``rollout``: sample ``num_rollouts`` responses (KV cache), score prompt + response with ``reward_fn``
  2. ``logprobs_and_values``: one no-grad forward pass of the policy (log-probs and values together)
     and of the frozen reference (log-probs)
  3. ``shaped_rewards``: scores scaled and clipped; per-token rewards = -kl_coef * KL, plus the score on the last token
  4. ``advantages``: GAE advantages and returns; advantages whitened
  5. ``optimise``: ``ppo_epochs`` passes of :func:`core.ppo_loss` over minibatches (early stop on approx-KL)
  6. ``update_kl_controller``: the KL controller moves kl_coef
With ``algorithm=rloo|grpo`` (k samples per prompt), phases 3-5 call :mod:`critic_free` instead: one reward per
sample, RLOO/GRPO advantages, and the clipped surrogate without a value loss (docs/ppo.md, "Other learners");
then :func:`report.step_metrics` turns the step into a metrics row. :meth:`PPOTrainer.run` adds eval,
checkpoints and reports around the steps.

The policy sees the reward only as ``reward_fn(list[str]) -> scores``; the reward model may use any tokenizer.
Device placement, mixed precision and DDP go through ``accelerate``. The loop's speed tricks live in
two named places: :meth:`PPOTrainer.policy_forward` reuses a forward pass, and :meth:`PPOTrainer.frozen_trunk`
runs the frozen bottom layers once per rollout for the policy, the reference and every PPO epoch
(:mod:`rl_finetune.hydra`). With ``lora_r > 0`` only peft's LoRA adapters (and the value head) train, and the
reference is the policy with its adapters off (:class:`rl_finetune.value_head.LoraAdapters`): no copy is kept.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from base_policy.sampling import Bf16Weights
from common.config import to_dict
from common.errors import UserError
from common.tracking import TENSORBOARD_DIR, open_tracker
from rl_finetune.hydra import FrozenTrunk
from rl_finetune.ppo import checkpoint, core, critic_free
from rl_finetune.ppo.config import PPOConfig
from rl_finetune.ppo.distributed import any_process, make_accelerator, mean_of, mean_over_processes, optimiser_step
from rl_finetune.ppo.evaluate import Evaluator
from rl_finetune.ppo.kl import make_kl_controller
from rl_finetune.ppo.report import (
    MetricsLog,
    ProgressBar,
    Timer,
    mean_rows,
    rollout_stats,
    step_metrics,
    summarise,
    write_reports,
)
from rl_finetune.ppo.rollout import (
    LogprobsAndValues,
    PromptStream,
    Rollout,
    Sampler,
    join_rollouts,
    seeded,
    tokenize_prompts,
)
from rl_finetune.value_head import (
    LoraAdapters,
    PolicyWithValueHead,
    default_lora_targets,
    freeze_bottom,
    transformer_blocks,
    unmatched_lora_targets,
)

log = logging.getLogger(__name__)

RewardFn = Callable[[list[str]], Sequence[float]]


@dataclass
class PPOResult:
    model: torch.nn.Module  # the trained causal LM (plain Hugging Face model; with LoRA a copy, adapters merged)
    tokenizer: object
    policy: PolicyWithValueHead  # the trained model + value head (with LoRA: the adapters still in it)
    config: PPOConfig
    metrics: list[dict]
    before: list[dict] = field(default_factory=list)  # eval samples at step 0
    after: list[dict] = field(default_factory=list)  # eval samples at the end
    summary: dict = field(default_factory=dict)
    work_dir: Path | None = None
    start_policy: str | None = None


def _model_and_tokenizer(policy) -> tuple[torch.nn.Module, object]:
    if not (isinstance(policy, tuple) and len(policy) == 2):
        raise UserError(
            f"train() takes the policy as a (model, tokenizer) pair, not {type(policy).__name__} {policy!r:.80}.",
            "load a policy folder with base_policy.loading.load_policy(path) and pass what it returns.",
        )
    return policy


def check_policy_fits(cfg: PPOConfig, lm: torch.nn.Module) -> None:
    """The settings that need the model, checked before anything is written (:func:`stage.run_stage` calls it
    before claiming a run folder): ``num_layers_unfrozen`` within the model's layers, and with LoRA every
    ``lora_target`` naming a linear layer of the trainable blocks. A one-line :class:`UserError` otherwise."""
    n_layers = len(transformer_blocks(lm))
    if cfg.num_layers_unfrozen > n_layers:
        raise UserError(
            f"ppo.num_layers_unfrozen={cfg.num_layers_unfrozen} is more than the policy's {n_layers} layers.",
            f"set ppo.num_layers_unfrozen to at most {n_layers} (or -1 to train every layer).",
        )
    if not cfg.lora_r or cfg.lora_target is None:
        return
    missing = unmatched_lora_targets(lm, cfg.lora_target, cfg.num_layers_unfrozen)
    if missing:
        where = "" if cfg.num_layers_unfrozen in (-1, n_layers) else f"top {cfg.num_layers_unfrozen} of its "
        raise UserError(
            f"ppo.lora_target {missing} names no linear layer in the {where}{n_layers} blocks of the policy "
            f"({type(lm).__name__}).",
            f"use some of {default_lora_targets(lm)}, or ppo.lora_target=null for all of them.",
        )


class PPOTrainer:
    # ================================================================== setup
    def __init__(
        self,
        policy: tuple[torch.nn.Module, object],
        reward_fn: RewardFn,
        prompts: list[str],
        config: PPOConfig,
        *,
        eval_prompts: list[str] | None = None,
        gold_fn: RewardFn | None = None,
        eval_fns: dict[str, RewardFn] | None = None,
        work_dir: Path | None = None,
        accelerator=None,
        progress: bool = True,
    ):
        config.validate()
        self.cfg = cfg = config
        if not prompts:
            raise UserError("train() got no prompts.", "pass a non-empty list of prompt strings.")
        self.accelerator = accelerator or make_accelerator(cfg.mixed_precision)
        acc = self.accelerator
        threads = cfg.num_threads or max(1, (os.cpu_count() or 1) // acc.num_processes)
        if acc.device.type == "cpu":
            torch.set_num_threads(threads)
        torch.manual_seed(cfg.seed + acc.process_index)

        lm, tok = _model_and_tokenizer(policy)
        self.start_policy = getattr(lm, "name_or_path", None)
        self.tokenizer = tok
        self.eos_id = tok.eos_token_id
        self.pad_id = (
            tok.pad_token_id if tok.pad_token_id is not None else (self.eos_id if self.eos_id is not None else 0)
        )
        lm.eval()  # dropout off, for the whole run
        check_policy_fits(cfg, lm)
        n_layers = len(transformer_blocks(lm))
        hydra = cfg.shared_trunk and 0 <= cfg.num_layers_unfrozen < n_layers
        self.lora = None  # with lora_r: the adapters, and the reference is the policy with them off
        if cfg.lora_r:
            self.lora = LoraAdapters(
                lm, r=cfg.lora_r, alpha=cfg.lora_scale_alpha, dropout=cfg.lora_dropout, targets=cfg.lora_target,
                num_layers_unfrozen=cfg.num_layers_unfrozen,
            )  # fmt: skip
            self.ref, self.n_trainable = None, self.lora.n_trainable
        else:
            self.ref = None if hydra else copy.deepcopy(lm).eval().requires_grad_(False).to(acc.device)
            self.n_trainable = freeze_bottom(lm, cfg.num_layers_unfrozen)
        # the reference shares the frozen bottom and keeps a copy of only the top blocks (rl_finetune.hydra)
        adapters_off = self.lora.off if self.lora is not None else None
        self.trunk = (
            FrozenTrunk(lm, cfg.num_layers_unfrozen, adapters_off=adapters_off).to(acc.device) if hydra else None
        )
        policy_model = PolicyWithValueHead(lm)
        params = [p for p in policy_model.parameters() if p.requires_grad]
        head = [p for p in policy_model.v_head.parameters()]
        trunk = [p for p in params if all(p is not h for h in head)]
        opt = torch.optim.AdamW(
            [{"params": trunk}, {"params": head, "lr": cfg.value_head_lr or cfg.lr}],
            lr=cfg.lr,
            betas=tuple(cfg.adam_betas),
            eps=cfg.adam_eps,
            weight_decay=cfg.weight_decay,
        )
        self.model, self.opt = acc.prepare(policy_model, opt)
        self.params = params

        # bf16 copies of the frozen weights, cast once instead of by autocast on every call (CPU)
        self.bf16 = Bf16Weights(enabled=acc.mixed_precision == "bf16" and acc.device.type == "cpu")
        self.sampler = Sampler(
            tok, reward_fn, cfg.gen_kwargs, cfg.generation_batch_size, self.eos_id, self.pad_id, acc.device,
            acc.autocast, cfg.sample_threads, self.bf16, self.trunk,
        )  # fmt: skip
        self.kl_ctl = make_kl_controller(cfg.init_kl_coef, cfg.kl_target, cfg.kl_horizon, cfg.kl_coef_min)
        self.moments = core.RunningMoments()
        rank, world = acc.process_index, acc.num_processes
        my_prompts = list(prompts)[rank::world] or list(prompts)
        self.stream = PromptStream(
            tokenize_prompts(tok, my_prompts, cfg.max_prompt_tokens), my_prompts, cfg.seed + rank
        )
        self.eval_prompts = list(eval_prompts or [])
        eval_tokens = tokenize_prompts(tok, self.eval_prompts, cfg.max_prompt_tokens) if self.eval_prompts else []
        self.evaluator = Evaluator(
            self.sampler, self.eval_prompts, eval_tokens, cfg.seed + 424242, gold_fn, dict(eval_fns or {})
        )
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.progress = progress
        self.step = 0
        self.elapsed = 0.0
        self._first_update_forward = None  # see policy_forward
        self.before: list[dict] = []
        if acc.is_main_process and self.lora is not None:
            log.info("LoRA r=%d, alpha=%g on %s", cfg.lora_r, cfg.lora_scale_alpha, ", ".join(self.lora.targets))
        if acc.is_main_process:
            log.info(
                "%s: %d prompts, %d eval prompts, %d trainable parameters, %d process(es), %d thread(s), %s",
                cfg.algorithm.upper(),
                len(prompts),
                len(self.eval_prompts),
                self.n_trainable,
                world,
                threads,
                self.accelerator.mixed_precision,
            )

    @property
    def unwrapped(self) -> PolicyWithValueHead:
        return self.accelerator.unwrap_model(self.model)

    # ================================================================== one PPO iteration
    def train_step(self, step: int) -> dict:
        """PPO step ``step`` (0-based), phases 1-6 of the module docstring; returns its metrics row."""
        cfg, acc, timer = self.cfg, self.accelerator, Timer()
        with timer("rollout"):
            rollout = self.rollout(step, timer)  # 1. (reward_fn's share goes to time/reward)
        with timer("forward"):
            old = self.logprobs_and_values(rollout)  # 2.
        kl_coef = self.kl_ctl.value
        rewards, kl = self.shaped_rewards(rollout, old, kl_coef)  # 3.
        advantages, returns = self.advantages(old, rewards, rollout.mask.float())  # 4.
        with timer("optimise"):
            update_stats = self.optimise(rollout, old, advantages, returns, step)  # 5.
        kl_mean = self.update_kl_controller(kl)  # 6.
        stats = {**rollout_stats(old, returns, rollout.mask.float()), **update_stats}
        if cfg.algorithm != "ppo":  # no value head to report on
            stats = {k: v for k, v in stats.items() if k not in ("value_mean", "explained_variance")}
        scores, stats = acc.gather(rollout.scores), mean_over_processes(acc, stats)
        return step_metrics(step, scores, kl_mean, kl_coef, stats, timer, cfg.num_rollouts * acc.num_processes)

    # ------------------------------------------------------------------ 1. rollout
    def rollout(self, step: int, timer: Timer) -> Rollout:
        """``num_rollouts`` prompts of the stream (this step's share), their responses and scores."""
        gen = seeded(self.cfg.seed * 1_000_003 + step * 7919 + self.accelerator.process_index)
        idx = self.stream.take(step, self.cfg.num_rollouts // self.cfg.k)
        idx = critic_free.repeat_each(idx, self.cfg.k)  # k samples per prompt, side by side (k = 1 for PPO)
        tokens, texts = [self.stream.tokens[i] for i in idx], [self.stream.texts[i] for i in idx]
        batches = self.sampler(self.unwrapped, tokens, texts, gen, f"step {step}, rollout", timer)
        return join_rollouts(list(batches), self.pad_id)

    # ------------------------------------------------------------------ 2. log-probs, values, reference
    @torch.no_grad()
    def logprobs_and_values(self, rollout: Rollout) -> LogprobsAndValues:
        """Log-probs, values and entropy of the policy before this step's updates; log-probs of the reference."""
        T = self.cfg.gen_kwargs.temperature
        logits, values = self.policy_forward(rollout)
        ref_logits = self.reference_logits(rollout)
        logprobs, entropy = core.logprobs_and_entropy(logits, rollout.response, T)  # chunked: 1/8 the memory
        return LogprobsAndValues(
            logprobs=logprobs,
            values=values.float(),
            entropy=entropy,
            ref_logprobs=core.logprobs_and_entropy(ref_logits, rollout.response, T, with_entropy=False)[0],
            # the reference's full next-token distributions, for the exact KL in the loss
            ref_logp_full=torch.log_softmax(ref_logits.float() / T, dim=-1) if self.cfg.kl_loss_coef else None,
        )

    def policy_forward(self, rollout: Rollout, mb: torch.Tensor | None = None):
        """The policy's (logits, values): on the whole rollout before any update (``mb=None``; detached), or
        on minibatch ``mb`` during phase 5 (with gradients).

        The loop's one speed trick lives here: with one minibatch per epoch, the first update's forward
        pass *is* the old policy's (same weights, same inputs), so it runs once, with gradients, and the
        first minibatch reuses it (one forward pass less per step). Not with LoRA dropout, which only the
        updates see."""
        dropout = self.lora is not None and self.cfg.lora_dropout > 0
        if mb is not None:
            reused, self._first_update_forward = self._first_update_forward, None
            if reused is not None:
                return reused
            with self.frozen_trunk(rollout, mb), self.lora.dropout() if dropout else contextlib.nullcontext():
                return self.model(**rollout.model_inputs(mb))
        if self.cfg.minibatches_per_epoch == 1 and not dropout:
            with torch.enable_grad(), self.frozen_trunk(rollout):
                self._first_update_forward = self.model(**rollout.model_inputs())
            return tuple(x.detach() for x in self._first_update_forward)
        with self.accelerator.autocast(), self.frozen_trunk(rollout):
            return self.unwrapped(**rollout.model_inputs())

    def reference_logits(self, rollout: Rollout) -> torch.Tensor:
        """The frozen reference's logits at the positions that predict the response tokens: (B, R, V)."""
        inputs = rollout.model_inputs()
        if self.trunk is not None:  # the policy's modules, with the reference's copy of the top blocks
            with self.accelerator.autocast(), self.frozen_trunk(rollout, reference=True):
                return self.unwrapped(**inputs, with_values=False)[0]
        if self.lora is not None:  # the policy with its adapters off is the start model
            with self.accelerator.autocast(), self.bf16(self.unwrapped.lm), self.lora.off():
                return self.unwrapped(**inputs, with_values=False)[0]
        start = inputs.pop("start")
        with self.accelerator.autocast(), self.bf16(self.ref):
            ref_h = self.ref.base_model(**inputs, use_cache=False).last_hidden_state[:, start:-1]
            return self.ref.get_output_embeddings()(ref_h)

    @contextlib.contextmanager
    def frozen_trunk(self, rollout: Rollout, mb: torch.Tensor | None = None, *, reference: bool = False):
        """The second speed trick (trlx's hydra): the frozen bottom layers' output for a rollout is computed
        once, kept on the rollout, and replayed into every later forward pass of the policy (or, with
        ``reference``, of the reference's top blocks). A no-op when every layer trains (``self.trunk`` is None)."""
        if self.trunk is None:
            with self.bf16(self.unwrapped.lm):
                yield
            return
        if rollout.trunk_hidden is None:  # rare: every row ended early; the sampler's copies (none for SmolLM2)
            with self.accelerator.autocast(), self.bf16.sampling(self.unwrapped.lm):
                rollout.trunk_hidden = self.trunk.hidden(**rollout.model_inputs())
        hidden = rollout.trunk_hidden if mb is None else rollout.trunk_hidden[mb]
        branch = self.trunk.reference(hidden) if reference else self.trunk.replay(hidden)
        # with LoRA the bf16 copies go in first: peft marks switched-off adapters frozen, and Bf16Weights
        # would keep a copy of every frozen weight it sees (the reference's own top blocks need the other order)
        first, then = (
            (self.bf16(self.unwrapped.lm), branch) if self.lora is not None else (branch, self.bf16(self.unwrapped.lm))
        )
        with first, then:
            yield

    # ------------------------------------------------------------------ 3. rewards, 4. advantages
    def shaped_rewards(self, rollout: Rollout, old: LogprobsAndValues, kl_coef: float):
        """Per-token rewards (B, R): the scaled, clipped score on the last token minus ``kl_coef`` * KL; and the KL."""
        cfg = self.cfg
        if cfg.scale_reward == "running":
            self.moments.update(self.accelerator.gather(rollout.scores))
        std, whiten = (self.moments.std if cfg.scale_reward == "running" else None), cfg.scale_reward == "whiten"
        scores = core.scale_and_clip_scores(rollout.scores, cfg.cliprange_reward, std=std, whiten_batch=whiten)
        mask = rollout.mask.float()
        if cfg.algorithm != "ppo":  # one reward per sample (B,), the KL in it or (kl_penalty=loss) in the loss
            kl_coef = kl_coef if cfg.kl_penalty == "reward" else 0.0
            return critic_free.sequence_rewards(scores, old.logprobs, old.ref_logprobs, mask, kl_coef, cfg.kl_estimator)
        return core.compute_rewards(scores, old.logprobs, old.ref_logprobs, mask, kl_coef, cfg.kl_estimator)

    def advantages(self, old: LogprobsAndValues, rewards: torch.Tensor, mask: torch.Tensor):
        """GAE advantages (whitened with ``whiten_advantages``) and returns, (B, R) each; for rloo/grpo the
        critic-free advantages of the sequence rewards (never whitened) and those rewards as the returns."""
        if self.cfg.algorithm != "ppo":  # RLOO / GRPO over the k samples of each prompt, on every response token
            adv = critic_free.advantages(rewards, self.cfg.k, self.cfg.algorithm, self.cfg.grpo_scale_std)
            return critic_free.token_advantages(adv, mask), critic_free.token_advantages(rewards, mask)
        advantages, returns = core.gae(old.values, rewards, mask, self.cfg.gamma, self.cfg.lam)
        return (core.whiten(advantages, mask) if self.cfg.whiten_advantages else advantages), returns

    # ------------------------------------------------------------------ 5. PPO epochs
    def optimise(self, rollout: Rollout, old: LogprobsAndValues, advantages, returns, step: int) -> dict:
        """``ppo_epochs`` passes over the rollout in minibatches of ``minibatch_size``, one update each; the
        rest is skipped once a minibatch's approx-KL (mean over processes) passes ``target_kl_early_stop``."""
        cfg, acc = self.cfg, self.accelerator
        g = seeded(cfg.seed * 31 + step + 17 * acc.process_index)
        B, mask, rows, limit = rollout.response.shape[0], rollout.mask.float(), [], cfg.target_kl_early_stop
        coefs = dict(temperature=cfg.gen_kwargs.temperature, cliprange=cfg.cliprange, vf_coef=cfg.vf_coef)
        coefs.update(cliprange_value=cfg.cliprange_value, ent_coef=cfg.ent_coef, kl_loss_coef=cfg.kl_loss_coef)
        for _epoch in range(cfg.ppo_epochs):
            order = torch.randperm(B, generator=g) if cfg.minibatches_per_epoch > 1 else torch.arange(B)
            for mb in order.split(cfg.minibatch_size):
                mb = mb.to(acc.device)
                logits, values = self.policy_forward(rollout, mb)
                o = old[mb]
                if cfg.algorithm != "ppo":
                    loss, stats = self.critic_free_loss(
                        logits, values, rollout.response[mb], o, advantages[mb], mask[mb]
                    )
                else:
                    loss, stats = core.ppo_loss(
                        logits, values, rollout.response[mb], o.logprobs, o.values, advantages[mb], returns[mb],
                        mask[mb], ref_logp_full=o.ref_logp_full, **coefs,
                    )  # fmt: skip
                grad_norm = optimiser_step(acc, self.opt, self.params, loss, cfg.max_grad_norm)
                rows.append({**{k: v.item() for k, v in stats.items()}, **grad_norm})
                if limit is not None and mean_of(acc, stats["approx_kl"]) > limit:
                    return {**mean_rows(rows), "ppo_updates": float(len(rows)), "early_stopped": 1.0}
        return {**mean_rows(rows), "ppo_updates": float(len(rows)), "early_stopped": 0.0}

    def critic_free_loss(self, logits, values, tokens, old: LogprobsAndValues, advantages, mask):
        """RLOO/GRPO's loss on a minibatch (:func:`critic_free.policy_gradient_loss`): no value loss; with
        ``kl_penalty=loss`` the KL (``kl_estimator``, the KL controller's coefficient) is a loss term."""
        cfg = self.cfg
        loss, stats = critic_free.policy_gradient_loss(
            logits, tokens, old.logprobs, advantages, mask, temperature=cfg.gen_kwargs.temperature,
            cliprange=cfg.cliprange, ent_coef=cfg.ent_coef, kl_coef=self.kl_ctl.value if cfg.kl_penalty == "loss" else 0.0,
            ref_logprobs=old.ref_logprobs, kl_estimator=cfg.kl_estimator, kl_loss_coef=cfg.kl_loss_coef,
            ref_logp_full=old.ref_logp_full,
        )  # fmt: skip
        # the unused value head stays in the graph with a zero gradient (DDP wants a gradient for every parameter)
        return loss + 0.0 * values.float().sum(), stats

    # ------------------------------------------------------------------ 6. KL controller
    def update_kl_controller(self, kl: torch.Tensor) -> float:
        """Move kl_coef on the mean KL per sample of all processes; returns that mean."""
        kl_mean = mean_of(self.accelerator, kl.sum(-1).mean())
        self.kl_ctl.update(kl_mean, self.cfg.num_rollouts * self.accelerator.num_processes)
        return kl_mean

    # ================================================================== eval
    def evaluate(self) -> tuple[dict, list[dict]]:
        """Sample and score the eval prompts (main process only); see :class:`Evaluator`."""
        return self.evaluator(self.unwrapped, self.kl_per_sample)

    def kl_per_sample(self, rollout: Rollout) -> torch.Tensor:
        """Sampled KL(policy || reference) summed over each response: (B,)."""
        T = self.cfg.gen_kwargs.temperature
        with self.accelerator.autocast(), self.frozen_trunk(rollout):
            logits, _ = self.unwrapped(**rollout.model_inputs())
        logprobs = core.logprobs_from_logits(logits, rollout.response, T)
        del logits  # (B, T, vocabulary): freed before the reference's own logits are made
        ref_logprobs = core.logprobs_from_logits(self.reference_logits(rollout), rollout.response, T)
        return ((logprobs - ref_logprobs) * rollout.mask.float()).sum(-1)

    # ================================================================== the loop
    def run(self, resume: bool = False) -> PPOResult:
        """Eval at step 0, ``train_step`` until ``total_steps`` or ``max_minutes``, eval every
        ``eval_interval`` steps and at the end, checkpoints every ``checkpoint_interval``; then the reports."""
        cfg, acc, main = self.cfg, self.accelerator, self.accelerator.is_main_process
        resumed = resume and checkpoint.resume(self)
        path = self.work_dir / "metrics.jsonl" if self.work_dir else None
        tracker = open_tracker(self.work_dir, to_dict(cfg), name=cfg.algorithm) if main and self.work_dir else None
        metrics = MetricsLog(path, write=main, resume_at=self.step if resumed else None, tracker=tracker)
        after: list[dict] = []
        if not resumed and main and self.eval_prompts:
            ev, self.before = self.evaluate()
            metrics.record({"step": 0, **ev})
        acc.wait_for_everyone()
        bar = ProgressBar(cfg.total_steps, self.step, enabled=self.progress and main)
        deadline = time.monotonic() + cfg.max_minutes * 60 - self.elapsed if cfg.max_minutes else None
        last_eval_step = 0 if not resumed else -1
        while self.step < cfg.total_steps:
            t0 = time.perf_counter()
            row = self.train_step(self.step)
            self.step += 1
            self.elapsed += time.perf_counter() - t0
            row["elapsed_s"] = self.elapsed
            out_of_time = any_process(acc, deadline is not None and time.monotonic() > deadline)
            last = self.step >= cfg.total_steps or out_of_time
            if main and self.eval_prompts and (self.step % cfg.eval_interval == 0 or last):
                t_eval = time.perf_counter()
                ev, after = self.evaluate()
                row.update(ev, eval_time=time.perf_counter() - t_eval)
                last_eval_step = self.step
            metrics.record(row)
            bar.update(row)
            if cfg.checkpoint_interval and self.step % cfg.checkpoint_interval == 0 and not last:
                checkpoint.save(self)
            if out_of_time:
                log.info("stopping after %d steps: max_minutes=%s reached", self.step, cfg.max_minutes)
                break
        bar.close()
        metrics.close()
        rows = metrics.rows
        if main and self.eval_prompts and not after and last_eval_step != self.step:
            ev, after = self.evaluate()
            rows[-1].update(ev) if rows else None
        acc.wait_for_everyone()
        summary = summarise(rows, self.step, self.elapsed, acc.num_processes, self.start_policy)
        if main and self.work_dir is not None:
            config = to_dict(self.cfg)
            write_reports(self.work_dir, rows, self.before, after, summary, config, self.cfg.num_samples_report)
        model = self.lora.merged() if self.lora is not None else self.unwrapped.lm  # a plain HF model either way
        return PPOResult(
            model, self.tokenizer, self.unwrapped, self.cfg, rows, self.before, after, summary, self.work_dir,
            self.start_policy,
        )  # fmt: skip


def train(
    policy: tuple[torch.nn.Module, object],
    reward_fn: RewardFn,
    prompts: list[str],
    config: PPOConfig | None = None,
    eval_prompts: list[str] | None = None,
    gold_fn: RewardFn | None = None,
    *,
    eval_fns: dict[str, RewardFn] | None = None,
    work_dir: Path | str | None = None,
    resume: bool = False,
    accelerator=None,
    progress: bool = True,
) -> PPOResult:
    """Fine-tune ``policy``, a ``(model, tokenizer)`` pair (``base_policy.loading.load_policy(path)``
    returns one), with PPO against ``reward_fn(list[str]) -> scores`` on ``prompts`` (trlx's ``trlx.train``
    shape). The model is trained in place.

    ``eval_prompts`` are sampled and scored (with ``reward_fn``, ``gold_fn`` as ``gold``, and each of
    ``eval_fns``) at the start, every ``eval_interval`` steps and at the end. With ``work_dir``, the run
    writes ``metrics.jsonl``, plots, ``samples.md`` and resumable checkpoints there (``resume=True``
    continues from its checkpoint). Save the result with :func:`rl_finetune.ppo.save_policy`.
    """
    trainer = PPOTrainer(
        policy,
        reward_fn,
        prompts,
        config or PPOConfig(),
        eval_prompts=eval_prompts,
        gold_fn=gold_fn,
        eval_fns=eval_fns,
        work_dir=Path(work_dir) if work_dir is not None else None,
        accelerator=accelerator,
        progress=progress,
    )
    return trainer.run(resume=resume)


REPORT_FILES = ("metrics.jsonl", "summary.json", "ppo_config.json", "samples.md", "reward_kl.png", "reward_vs_kl.png")


def save_policy(result: PPOResult, final_dir: Path | str) -> Path:
    """Save the trained policy atomically in plain HF format (``from_pretrained(dir)`` loads a normal
    causal LM), the value head as ``value_head.safetensors``, and the run's reports beside it."""
    import shutil

    from common.paths import atomic_dir

    final_dir = Path(final_dir)
    with atomic_dir(final_dir) as tmp:
        result.model.save_pretrained(tmp)
        result.tokenizer.save_pretrained(tmp)
        result.policy.save_value_head(tmp)
        if result.work_dir is not None:
            for name in REPORT_FILES:
                src = Path(result.work_dir) / name
                if src.is_file():
                    shutil.copy2(src, tmp / name)
            if (Path(result.work_dir) / TENSORBOARD_DIR).is_dir():  # the run's event files (common.tracking)
                shutil.copytree(Path(result.work_dir) / TENSORBOARD_DIR, tmp / TENSORBOARD_DIR)
        if not (tmp / "ppo_config.json").exists():
            (tmp / "ppo_config.json").write_text(json.dumps(to_dict(result.config), indent=2))
        if not (tmp / "summary.json").exists():
            (tmp / "summary.json").write_text(json.dumps(result.summary, indent=2, default=str))
    return final_dir
