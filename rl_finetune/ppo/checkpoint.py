"""Resumable checkpoints of a PPO run.

A checkpoint is the folder ``<work_dir>/checkpoint/`` with ``policy.pt`` (policy + value head),
``optimizer.pt`` and ``state.json`` (step, elapsed time, KL controller, running moments, the
step-0 eval samples, the config), written atomically every ``checkpoint_interval`` steps.

``--resume`` (:func:`find_run_to_resume`) continues the newest unfinished run under ``policies/``
and names it. Before any model loads it refuses, with one line and the fix: no unfinished run, a
run that already finished (its policy is saved; it is never trained again), a run another live
process is training, a damaged ``state.json``, and a checkpoint of another starting policy or
other settings. A damaged or mismatched ``policy.pt`` / ``optimizer.pt`` is refused when loaded,
before anything is written.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from common.config import to_dict
from common.errors import UserError
from common.paths import WORK_PREFIX, atomic_dir, claim_run, host_tag, model_kind, owner_alive, run_owner

CHECKPOINT = "checkpoint"
#: Settings a resumed run must share with its checkpoint (they shape the trained parameters, the
#: optimiser's groups or the KL controller's state). A LoRA run resumes with its adapters: ``policy.pt``
#: holds them beside the (frozen) weights they adapt.
MUST_MATCH = (
    "num_layers_unfrozen", "shared_trunk", "kl_target", "kl_horizon", "kl_coef_min", "scale_reward", "lora_r",
    "lora_alpha", "lora_target",
)  # fmt: skip
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
    if trainer.accelerator.is_main_process and trainer.work_dir.name.startswith(WORK_PREFIX):
        claim_run(trainer.work_dir)  # this process trains it now
    log.info(
        "resumed from %s (PPO run %s) at step %d of %d",
        folder,
        run_name(trainer.work_dir),
        trainer.step,
        trainer.cfg.total_steps,
    )
    return True


def save_checkpoint(folder: Path, accelerator, policy: torch.nn.Module, optimizer, state: dict) -> None:
    """Write ``folder`` atomically from the main process; every process waits for it."""
    if accelerator.is_main_process:
        with atomic_dir(folder) as tmp:
            torch.save(policy.state_dict(), tmp / "policy.pt")
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            (tmp / "state.json").write_text(json.dumps(state))
    accelerator.wait_for_everyone()


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"


def _first_sentence(err: BaseException) -> str:
    """The error's first sentence: torch's advice to load with ``weights_only=False`` is left out."""
    text = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {text.split('. ')[0][:200]}"


def _fix(work_dir: Path) -> str:
    return (
        f"start a new run without --resume, or remove that run's folder (rm -r {str(work_dir)!r}) and resume another."
    )


def load_checkpoint(folder: Path, accelerator, policy: torch.nn.Module, optimizer) -> dict | None:
    """Load the weights and optimiser state of ``folder`` into ``policy`` and ``optimizer``; its
    ``state.json`` (or None when there is no checkpoint). A damaged file, or weights of another
    model, is a :class:`UserError` naming the run's folder and the fix."""
    if not (folder / "state.json").is_file():
        return None
    work = folder.parent
    state = read_state(folder)
    loaded = {}
    for name in ("policy.pt", "optimizer.pt"):
        try:
            loaded[name] = torch.load(folder / name, map_location=accelerator.device, weights_only=True)
        except Exception as err:  # truncated, garbage, or code-carrying files
            raise UserError(
                f"--resume: the checkpoint of PPO run {run_name(work)!r} in {str(folder)!r} is damaged "
                f"({name}: {_first_sentence(err)}).",
                _fix(work),
            ) from None
    weights, opt_state = loaded["policy.pt"], loaded["optimizer.pt"]
    try:
        policy.load_state_dict(weights)
        optimizer.load_state_dict(opt_state)
    except (RuntimeError, ValueError, KeyError) as err:
        raise UserError(
            f"--resume: the checkpoint of PPO run {run_name(work)!r} in {str(folder)!r} does not fit this policy "
            f"({_first_line(err)}).",
            _fix(work),
        ) from None
    return state


def read_state(folder: Path) -> dict:
    """A checkpoint's ``state.json``, checked to be a mapping with a step."""
    work = folder.parent
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            raise ValueError("no step in it")
    except (OSError, ValueError) as err:
        raise UserError(
            f"--resume: the checkpoint of PPO run {run_name(work)!r} in {str(folder)!r} is damaged "
            f"(state.json: {_first_line(err)}).",
            _fix(work),
        ) from None
    for name in ("policy.pt", "optimizer.pt"):
        if not (folder / name).is_file() or (folder / name).stat().st_size == 0:
            raise UserError(
                f"--resume: the checkpoint of PPO run {run_name(work)!r} in {str(folder)!r} is damaged ({name} is missing or empty).",
                _fix(work),
            )
    return state


def run_name(work_dir: Path) -> str:
    name = Path(work_dir).name
    return name[len(WORK_PREFIX) :] if name.startswith(WORK_PREFIX) else name


def unfinished_runs(policies: Path) -> list[Path]:
    """The work folders under ``policies`` that hold a checkpoint, oldest first."""
    if not policies.is_dir():
        return []
    return sorted(
        (p for p in policies.glob(WORK_PREFIX + "*") if (p / CHECKPOINT / "state.json").is_file()),
        key=lambda p: p.stat().st_mtime,
    )


def _same_policy(a, b) -> bool:
    if a is None or b is None:
        return True  # an older checkpoint without it: nothing to compare
    pa, pb = Path(str(a)).expanduser(), Path(str(b)).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return str(a) == str(b)


def find_run_to_resume(policies: Path, start_policy: str, cfg) -> tuple[Path, str]:
    """The work folder and run id that ``--resume`` continues: the newest unfinished run under
    ``policies``, checked before any model loads (see the module docstring)."""
    runs = unfinished_runs(policies)
    if not runs:
        raise UserError(
            f"--resume: there is no unfinished PPO run under {str(policies)!r} (no {WORK_PREFIX}<run>/checkpoint).",
            "run without --resume to start a new run.",
        )
    work = runs[-1]
    run_id = run_name(work)
    saved = policies / run_id
    if model_kind(saved) == "policy":
        raise UserError(
            f"--resume: PPO run {run_id!r} already finished: its policy is saved in {str(saved)!r} "
            f"(only its work folder {work.name!r} is left).",
            "start a new run without --resume; `python -m db clean-runs --yes` removes the leftover work folder.",
        )
    owner = run_owner(work)
    if owner is not None and owner_alive(*owner) and owner != (host_tag(), os.getpid()):
        raise UserError(
            f"--resume: PPO run {run_id!r} is still being trained by pid {owner[1]} on {owner[0]} (in {str(work)!r}).",
            "wait for it to finish, or stop that process, then resume.",
        )
    state = read_state(work / CHECKPOINT)
    if not _same_policy(state.get("start_policy"), start_policy):
        raise UserError(
            f"--resume: PPO run {run_id!r} started from the policy {state.get('start_policy')!r}, not {start_policy!r}.",
            f"resume with --policy {state.get('start_policy')}, or start a new run without --resume "
            f"(or remove {str(work)!r}).",
        )
    saved_cfg = state.get("config") or {}
    now = to_dict(cfg)
    for key in MUST_MATCH:
        if key in saved_cfg and saved_cfg[key] != now.get(key):
            raise UserError(
                f"--resume: PPO run {run_id!r} was trained with ppo.{key}={saved_cfg[key]!r}, not {now.get(key)!r}.",
                f"resume with --set {key}={json.dumps(saved_cfg[key])}, or start a new run without --resume "
                f"(or remove {str(work)!r}).",
            )
    return work, run_id
