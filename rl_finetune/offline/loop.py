"""The loop both offline learners share: load, reference pass, optimiser steps, evals, reports, atomic save.

:class:`OfflineTrainer` runs, in order:

1. ``load``: the policy folder through :func:`base_policy.loading.load_policy` (GPT-2, Llama/SmolLM2, hub
   names), frozen below its top ``num_layers_unfrozen`` blocks (:func:`rl_finetune.value_head.freeze_bottom`).
2. ``reference_pass``: one no-grad pass over every sequence the loss needs, *before any update*, when the
   policy still is the reference: its summed log-probs are the frozen reference's, kept as one number per
   sequence. No reference model is kept during training. With frozen bottom blocks (``cache_trunk``) the
   same pass keeps the frozen trunk's output of every sequence, and training runs only the top blocks on it
   (:meth:`rl_finetune.hydra.FrozenTrunk.replay`), as PPO's shared trunk does for a rollout.
3. ``run``: optimiser steps of ``step_fn(example_ids) -> (loss, stats)``, ``grad_accum`` forward passes each;
   ``eval_fn(model, tokenizer, step)`` at step 0, every ``eval_every`` steps and at the end; the time budget.
   Every row goes to ``metrics.jsonl`` in the run's work folder and, when :mod:`common.tracking` is there,
   to TensorBoard.
4. ``save``: the policy in plain Hugging Face format, atomically, with its reports beside it.

bf16 autocast on CPU and bf16 copies of the frozen weights work as in PPO (``mixed_precision``). One process.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from base_policy.sampling import Bf16Weights
from common.config import to_dict
from common.errors import UserError
from common.paths import WORK_PREFIX, atomic_dir, claim_run, write_json
from rl_finetune.hydra import FrozenTrunk
from rl_finetune.offline.batches import Sequence, collate, pad_pieces, sequence_logprobs, trunk_pieces
from rl_finetune.offline.config import OfflineConfig
from rl_finetune.ppo.distributed import make_accelerator
from rl_finetune.ppo.report import MetricsLog, mean_rows
from rl_finetune.value_head import freeze_bottom, transformer_blocks

log = logging.getLogger(__name__)

EvalFn = Callable[[torch.nn.Module, object, int], dict]
StepFn = Callable[[list[int]], tuple[torch.Tensor, dict]]
REPORT_FILES = ("metrics.jsonl", "summary.json", "samples.md")


def planned_steps(n_examples: int, cfg: OfflineConfig) -> int:
    """Optimiser steps of a run: ``max_steps`` when set (it overrides ``epochs``, as in TRL), else ``epochs``
    passes of ``batch_size`` examples, ``grad_accum`` batches a step."""
    if cfg.max_steps:
        return cfg.max_steps
    batches = math.ceil(math.ceil(n_examples / cfg.batch_size) * cfg.epochs)
    return max(1, math.ceil(batches / cfg.grad_accum))


def example_batches(n_examples: int, batch_size: int, seed: int):
    """Example ids in batches, forever: a seeded permutation per epoch (the last batch of an epoch may be short)."""
    epoch = 0
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(n_examples).tolist()
        for start in range(0, n_examples, batch_size):
            yield order[start : start + batch_size]
        epoch += 1


def _open_tracker(run_dir: Path, config: dict, name: str):
    """A :func:`common.tracking.open_tracker` tracker, or None when that module is not there."""
    try:
        from common.tracking import open_tracker
    except ImportError:
        return None
    return open_tracker(run_dir, config, name=name)


class OfflineTrainer:
    def __init__(self, policy_dir: Path | str, cfg: OfflineConfig, *, method: str):
        from base_policy.loading import load_policy, resolve_policy

        cfg.validate()
        self.cfg, self.method = cfg, method
        self.t0 = time.monotonic()
        # 1. load and freeze
        self.start_policy = resolve_policy(policy_dir)
        self.lm, self.tok = load_policy(self.start_policy)
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else (self.tok.eos_token_id or 0)
        n_layers = len(transformer_blocks(self.lm))
        if cfg.num_layers_unfrozen > n_layers:
            raise UserError(
                f"{cfg.SECTION}.num_layers_unfrozen={cfg.num_layers_unfrozen} is more than the policy's {n_layers} layers.",
                f"set {cfg.SECTION}.num_layers_unfrozen to at most {n_layers} (or -1 to train every layer).",
            )
        self.acc = make_accelerator(cfg.mixed_precision)
        if self.acc.device.type == "cpu":
            torch.set_num_threads(cfg.num_threads or os.cpu_count() or 1)
        torch.manual_seed(cfg.seed)
        self.lm.eval().to(self.acc.device)  # dropout off, as in PPO
        self.n_trainable = freeze_bottom(self.lm, cfg.num_layers_unfrozen)
        partial = 0 < cfg.num_layers_unfrozen < n_layers
        self.trunk = FrozenTrunk(self.lm, cfg.num_layers_unfrozen) if partial and cfg.cache_trunk else None
        self.params = [p for p in self.lm.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay)
        self.bf16 = Bf16Weights(enabled=self.acc.mixed_precision == "bf16" and self.acc.device.type == "cpu")
        self.sequences: list[Sequence] = []
        self.ref_logps = torch.zeros(0)
        self.hidden: list[torch.Tensor] | None = None
        log.info(
            "%s: %s, %d trainable parameters, %s%s", method.upper(), self.start_policy, self.n_trainable,
            self.acc.mixed_precision, ", frozen trunk cached" if self.trunk is not None else "",
        )  # fmt: skip

    # ------------------------------------------------------------------ 2. the reference pass
    @torch.no_grad()
    def reference_pass(self, sequences: list[Sequence]) -> torch.Tensor:
        """The reference's summed log-prob of every sequence (N,), from the policy before any update;
        with a cached trunk, also each sequence's frozen-trunk output (``self.hidden``)."""
        self.sequences = list(sequences)
        logps, pieces = [], []
        for start in range(0, len(sequences), self.cfg.batch_size):
            batch = collate(self.sequences[start : start + self.cfg.batch_size], self.pad_id, self.acc.device)
            hidden = None
            if self.trunk is not None:
                with self.acc.autocast(), self.bf16(self.lm, trainable=True):
                    hidden = self.trunk.hidden(**batch.model_inputs())
                pieces += trunk_pieces(hidden, batch)
            logps.append(self._forward(batch, hidden, trainable=True))
        self.ref_logps = torch.cat(logps).float()  # (N,) on the device
        self.hidden = pieces if self.trunk is not None else None
        return self.ref_logps

    def _forward(self, batch, hidden: torch.Tensor | None, trainable: bool = False) -> torch.Tensor:
        inputs = batch.model_inputs()
        start = inputs.pop("start")
        replay = self.trunk.replay(hidden) if hidden is not None else contextlib.nullcontext()
        with self.acc.autocast(), replay, self.bf16(self.lm, trainable=trainable):
            h = self.lm.base_model(**inputs, use_cache=False).last_hidden_state[:, start:-1]
            logits = self.lm.get_output_embeddings()(h)  # (B, R, V): only the positions that predict completion tokens
        return sequence_logprobs(logits, batch.response, batch.mask)

    def logps(self, idx: list[int]) -> torch.Tensor:
        """The policy's summed log-prob of sequences ``idx`` (B,), with gradients when enabled."""
        batch = collate([self.sequences[i] for i in idx], self.pad_id, self.acc.device)
        hidden = pad_pieces([self.hidden[i] for i in idx], batch) if self.hidden is not None else None
        return self._forward(batch, hidden)

    # ------------------------------------------------------------------ 3. the loop
    def evaluate(self, eval_fn: EvalFn | None, step: int) -> dict | None:
        if eval_fn is None:
            return None
        with torch.no_grad():
            row = dict(eval_fn(self.lm, self.tok, step))
        self.lm.eval()
        return {**row, "step": step, "elapsed_s": time.monotonic() - self.t0}

    def run(
        self, step_fn: StepFn, n_examples: int, work_dir: Path, *, eval_fn: EvalFn | None, time_budget_s: float | None
    ) -> tuple[list[dict], list[dict]]:
        """Optimiser steps until ``planned_steps`` or the time budget; returns (metrics rows, eval rows)."""
        cfg = self.cfg
        total = planned_steps(n_examples, cfg)
        budget = time_budget_s if time_budget_s is not None else (cfg.max_minutes * 60 if cfg.max_minutes else None)
        deadline = self.t0 + budget if budget is not None else None
        metrics = MetricsLog(work_dir / "metrics.jsonl", write=True, resume_at=None)
        tracker = _open_tracker(work_dir, to_dict(cfg), self.method)
        batches = example_batches(n_examples, cfg.batch_size, cfg.seed)
        evals = []

        def record(row: dict) -> None:
            metrics.record(row)
            if tracker is not None:
                tracker.log(row, row["step"])

        try:
            first = self.evaluate(eval_fn, 0)
            if first is not None:
                evals.append(first)
                record(first)
            step = 0
            while step < total:
                t_step = time.perf_counter()
                row = self.optimiser_step(step_fn, batches)
                step += 1
                out_of_time = deadline is not None and time.monotonic() > deadline
                row.update(step=step, step_time=time.perf_counter() - t_step, elapsed_s=time.monotonic() - self.t0)
                if step % cfg.eval_every == 0 or step == total or out_of_time:
                    ev = self.evaluate(eval_fn, step)
                    if ev is not None:
                        evals.append(ev)
                        row.update({k: v for k, v in ev.items() if k not in ("step", "elapsed_s")})
                record(row)
                if out_of_time:
                    log.info(
                        "%s: stopping after %d of %d steps, the time budget (%.0f s) is used",
                        self.method,
                        step,
                        total,
                        budget,
                    )
                    break
        finally:
            if tracker is not None:
                tracker.close()
        return metrics.rows, evals

    def optimiser_step(self, step_fn: StepFn, batches) -> dict:
        """``grad_accum`` forward/backward passes, clipping, one AdamW step; the mean of their stats."""
        rows = []  # the model stays in eval mode: no dropout, as when the reference's log-probs were taken
        for _ in range(self.cfg.grad_accum):
            ids = next(batches)
            loss, stats = step_fn(ids)
            self.acc.backward(loss / self.cfg.grad_accum)
            rows.append({"loss": loss.item(), **{k: float(v) for k, v in stats.items()}})
        row = mean_rows(rows)
        if self.cfg.max_grad_norm:
            row["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return row

    # ------------------------------------------------------------------ 4. save
    def save(self, out_dir: Path, work_dir: Path, summary: dict, eval_fn: EvalFn | None) -> Path:
        """The policy atomically in ``out_dir`` (plain HF format), with metrics.jsonl, summary.json,
        ``<method>_config.json``, the TensorBoard events and, from an eval_fn that has ``write_report(folder)``
        (the CLI's), samples.md."""
        write_json(work_dir / "summary.json", summary)
        report = getattr(eval_fn, "write_report", None)
        if callable(report):
            report(work_dir)
        with atomic_dir(out_dir) as tmp:
            self.lm.save_pretrained(tmp)
            self.tok.save_pretrained(tmp)
            for name in REPORT_FILES:
                if (work_dir / name).is_file():
                    shutil.copy2(work_dir / name, tmp / name)
            if (work_dir / "tensorboard").is_dir():
                shutil.copytree(work_dir / "tensorboard", tmp / "tensorboard")
            write_json(tmp / f"{self.method}_config.json", to_dict(self.cfg))
        return out_dir


def work_folder(out_dir: Path) -> Path:
    """Where a run writes while it trains: ``.work-<name>`` beside ``out_dir`` (claimed by this process,
    so ``python -m db clean-runs`` leaves it alone while it runs); removed once the policy is saved."""
    work = Path(out_dir).parent / f"{WORK_PREFIX}{Path(out_dir).name}"
    claim_run(work)
    return work


def summarise(method: str, trainer: OfflineTrainer, rows: list[dict], evals: list[dict], labels_used: int) -> dict:
    """summary.json: the run's size and speed, the last step's statistics, and the first and last value of
    every eval metric (``<key>_before``, ``<key>_after``, as PPO's summary)."""
    train_rows = [r for r in rows if "loss" in r]
    s = {
        "method": method,
        "start_policy": trainer.start_policy,
        "steps": len(train_rows),
        "wall_s": time.monotonic() - trainer.t0,
        "labels_used": labels_used,
        "trainable_parameters": trainer.n_trainable,
        "s_per_step": float(np.mean([r["step_time"] for r in train_rows])) if train_rows else None,
    }
    if train_rows:
        s.update({f"train/{k}": v for k, v in train_rows[-1].items() if k not in ("step", "elapsed_s", "step_time")})
        s["train/loss_first"] = train_rows[0]["loss"]
    if evals:
        for k, v in evals[0].items():
            if k not in ("step", "elapsed_s"):
                s[f"{k}_before"], s[f"{k}_after"] = v, evals[-1].get(k)
    return s


def train_offline(
    method: str,
    policy_dir: Path,
    out_dir: Path,
    cfg: OfflineConfig,
    *,
    sequences: Callable[[object], list[Sequence]],
    make_step: Callable[[OfflineTrainer], StepFn],
    n_examples: int,
    labels_used: int,
    eval_fn: EvalFn | None,
    time_budget_s: float | None,
) -> dict:
    """Phases 1-4 for one learner: ``sequences(tokenizer)`` are the sequences to score, ``make_step(trainer)``
    its loss step (after the reference pass). Returns the dict of :func:`rl_finetune.offline.train_dpo`."""
    out_dir = Path(out_dir)
    trainer = OfflineTrainer(policy_dir, cfg, method=method)  # a policy that does not load: nothing written yet
    seqs = sequences(trainer.tok)
    work = work_folder(out_dir)
    try:
        trainer.reference_pass(seqs)
        rows, evals = trainer.run(make_step(trainer), n_examples, work, eval_fn=eval_fn, time_budget_s=time_budget_s)
        summary = summarise(method, trainer, rows, evals, labels_used)
        trainer.save(out_dir, work, summary, eval_fn)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "out_dir": out_dir,
        "steps": summary["steps"],
        "wall_s": time.monotonic() - trainer.t0,
        "final": evals[-1] if evals else {},
        "labels_used": labels_used,
        "evals": evals,
        "summary": summary,
        "metrics": rows,
        "start_policy": trainer.start_policy,
    }
