"""Resumable checkpoints of a PPO run.

A checkpoint is the folder ``<work_dir>/checkpoint/`` with ``policy.pt`` (policy + value head),
``optimizer.pt`` and ``state.json`` (step, elapsed time, KL controller, running moments, the
step-0 eval samples, the config), written atomically every ``checkpoint_interval`` steps.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from common.config import to_dict
from common.paths import atomic_dir

CHECKPOINT = "checkpoint"
log = logging.getLogger(__name__)


def save(trainer) -> None:
    """A checkpoint of a :class:`~rl_finetune.ppo.trainer.PPOTrainer` in ``<work_dir>/checkpoint`` (none without a work_dir)."""
    if trainer.work_dir is None:
        return
    state = {
        "step": trainer.step,
        "elapsed": trainer.elapsed,
        "kl_ctl": trainer.kl_ctl.state_dict(),
        "moments": trainer.moments.state_dict(),
        "before": trainer.before,
        "config": to_dict(trainer.cfg),
        "start_policy": trainer.start_policy,
    }
    save_checkpoint(trainer.work_dir / CHECKPOINT, trainer.accelerator, trainer.unwrapped, trainer.opt, state)


def resume(trainer) -> bool:
    """Load the trainer's checkpoint, if its work_dir has one: weights, optimiser, step, KL controller, moments."""
    folder = trainer.work_dir / CHECKPOINT if trainer.work_dir else None
    state = load_checkpoint(folder, trainer.accelerator, trainer.unwrapped, trainer.opt) if folder else None
    if state is None:
        return False
    trainer.step, trainer.elapsed = int(state["step"]), float(state["elapsed"])
    trainer.kl_ctl.load_state_dict(state["kl_ctl"])
    trainer.moments.load_state_dict(state["moments"])
    trainer.before = state.get("before") or []
    log.info("resumed from %s at step %d", folder, trainer.step)
    return True


def save_checkpoint(folder: Path, accelerator, policy: torch.nn.Module, optimizer, state: dict) -> None:
    """Write ``folder`` atomically from the main process; every process waits for it."""
    if accelerator.is_main_process:
        with atomic_dir(folder) as tmp:
            torch.save(policy.state_dict(), tmp / "policy.pt")
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            (tmp / "state.json").write_text(json.dumps(state))
    accelerator.wait_for_everyone()


def load_checkpoint(folder: Path, accelerator, policy: torch.nn.Module, optimizer) -> dict | None:
    """Load the weights and optimiser state of ``folder`` into ``policy`` and ``optimizer``; its
    ``state.json`` (or None when there is no checkpoint)."""
    if not (folder / "state.json").is_file():
        return None
    state = json.loads((folder / "state.json").read_text())
    policy.load_state_dict(torch.load(folder / "policy.pt", map_location=accelerator.device, weights_only=True))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=accelerator.device, weights_only=True))
    return state
