"""Stage 4 in one call: :func:`run_stage` loads the policy, the reward model and the prompts,
trains with PPO, saves the policy atomically, points ``policies/latest`` at it and registers it
in the database as a policy version whose parent is the starting policy.

``python -m rl_finetune ppo`` (:mod:`rl_finetune.ppo.cli`), the demo and the notebook all run
stage 4 through it::

    from rl_finetune.ppo import PPOConfig, run_stage
    stage = run_stage(PPOConfig(total_steps=100), policy="base", reward=None)  # the latest reward model
    stage.folder, stage.version, stage.result.summary["eval/p_good_after"]
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError
from common.metrics import scalar_metrics
from common.paths import WORK_PREFIX, claim_run, new_run_id, policies_dir, write_latest
from rl_finetune.ppo import checkpoint
from rl_finetune.ppo.config import PPOConfig
from rl_finetune.ppo.trainer import PPOResult, RewardFn, check_policy_fits, save_policy, train

log = logging.getLogger(__name__)

#: A run trains in ``policies/.work-<run-id>/`` (metrics, checkpoints) until its policy is saved
#: (``WORK_PREFIX``, from :mod:`common.paths`, which lists and collects the unfinished ones).


@dataclass
class StageResult:
    result: PPOResult
    folder: Path | None = None  # the saved policy; None when not saved (save=False, or not the main process)
    version: int | None = None  # its policy version in the database; None when not registered


def reward_fns(reward: str | Path | None, cfg: PPOConfig) -> tuple[RewardFn, dict[str, RewardFn]]:
    """The learned reward model at ``reward`` (None = the latest) as ``(reward_fn, {"p_good": fn})``:
    the training reward (``cfg.reward_kind``, conservative when ``cfg.reward_conservative_k`` or the
    model's saved ``conservative_k`` says so) and the reward model's P(good), logged at every evaluation.
    With an ensemble, ``p_good`` is always the ensemble mean's P(good), so the proxy curves of a mean run and
    a conservative run compare."""
    from reward_training import load_reward_fn

    reward_fn = load_reward_fn(
        reward, kind=cfg.reward_kind, batch_size=cfg.reward_batch_size, conservative_k=cfg.reward_conservative_k
    )
    prob_fn = (
        reward_fn
        if cfg.reward_kind == "prob" and reward_fn.conservative_k == 0  # type: ignore[attr-defined]
        else load_reward_fn(reward, kind="prob", batch_size=cfg.reward_batch_size, conservative_k=0.0)
    )  # the same cached model
    return reward_fn, {"p_good": prob_fn}


def stage_prompts(cfg: PPOConfig, data_cfg) -> tuple[list[str], list[str]]:
    """(train prompts, eval prompts): ``data_cfg.prompt_file`` split 4:1, else IMDB review openings
    from the train split and, for evaluation, from the test split."""
    from common.imdb import imdb_texts, make_prompts, read_prompt_file

    if data_cfg.prompt_file:
        prompts = read_prompt_file(data_cfg.prompt_file)
        n_eval = min(cfg.num_eval_prompts, max(1, len(prompts) // 5))
        return prompts[n_eval:] or prompts, prompts[:n_eval]
    texts = imdb_texts(data_cfg)
    train_prompts = make_prompts(texts["train"], cfg.num_train_prompts, data_cfg)
    held = make_prompts(texts["test"], cfg.num_eval_prompts, data_cfg, seed=data_cfg.seed + 1)
    return train_prompts, held


def latest_unfinished() -> Path | None:
    """The newest work folder under ``policies/`` with a checkpoint (a run to resume), or None."""
    runs = checkpoint.unfinished_runs(policies_dir())
    return runs[-1] if runs else None


def register(folder: Path, start_policy: str, summary: dict, engine=None) -> int:
    """Record the new policy in the database, parent = the starting policy's version. A failure is a
    :class:`UserError` that names the saved folder: the caller then leaves ``latest`` where it was."""
    from common.errors import explain

    try:
        import db
        from base_policy.registry import ensure_registered, register_policy

        engine = engine if engine is not None else db.connect()
        parent = ensure_registered(engine, start_policy)
        return register_policy(
            folder, name=folder.name, metrics=scalar_metrics(summary), parent_id=parent, engine=engine
        )
    except Exception as err:
        why = explain(err)
        reason = why.problem if why is not None else f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        raise UserError(
            f"the policy was saved to {str(folder)!r} but could not be registered in the database ({reason.rstrip('.')}); "
            "`latest` was not moved.",
            "fix the database (see the reason) and run again, or pass --no-db to skip registering; "
            f"the saved policy can be used as --policy {folder}.",
        ) from None


def run_stage(
    cfg: PPOConfig,
    *,
    policy: str | Path | None = None,
    reward: str | Path | None = None,
    prompts: list[str] | None = None,
    eval_prompts: list[str] | None = None,
    data_cfg=None,
    gold_fn: RewardFn | None = None,
    eval_fns: dict[str, RewardFn] | None = None,
    run_id: str | None = None,
    out: Path | None = None,
    work_dir: Path | None = None,
    resume: bool = False,
    save: bool = True,
    register_version: bool = True,
    engine=None,
    progress: bool = True,
) -> StageResult:
    """Fine-tune ``policy`` with PPO against the reward model at ``reward`` and keep the result.

    1. ``policy``: ``None``/``"base"``, ``"latest"`` (the newest PPO policy), a folder or a hub name;
       ``reward``: a reward model folder, None = the latest.
    2. ``prompts`` and ``eval_prompts``: given, or both from :func:`stage_prompts` with ``data_cfg``
       (None = the ``data`` section of the profile). ``gold_fn`` is logged beside the reward, and so is
       each of ``eval_fns`` (besides the reward model's ``p_good``).
    3. Training writes metrics and checkpoints to ``work_dir`` (None = ``policies/.work-<run-id>/``,
       removed once the policy is saved); ``resume=True`` continues from the checkpoint in
       ``work_dir`` (None = the newest unfinished run under ``policies/``, and its run id).
       A run to resume is checked before any model loads (:func:`checkpoint.find_run_to_resume`).
    4. With ``save``: the policy goes atomically to ``out`` (None = ``policies/<run-id>/``), then,
       with ``register_version``, into the database (``engine``, None = ``db.connect()``), and only
       then ``policies/latest`` points at it (when ``out`` is None): a failure at any step leaves
       ``latest`` on a saved, registered policy.
    """
    from base_policy.loading import load_policy, resolve_policy

    # 1. the starting policy (and the run to resume, checked before anything loads), the reward model
    start = resolve_policy(policy)
    temporary = work_dir is None
    if resume and work_dir is None:
        work_dir, run_id = checkpoint.find_run_to_resume(policies_dir(), start, cfg)
        log.info("resuming PPO run %s from %s", run_id, work_dir / checkpoint.CHECKPOINT)
    model, tokenizer = load_policy(start)
    check_policy_fits(cfg, model)  # num_layers_unfrozen, lora_target: refused before any folder is claimed
    reward_fn, reward_evals = reward_fns(reward, cfg)
    eval_fns = {**reward_evals, **(eval_fns or {})}
    # 2. the prompts
    if prompts is None or eval_prompts is None:
        if data_cfg is None:
            from common.config import load_config
            from common.imdb import DataConfig

            data_cfg = load_config(DataConfig, "data")
        default_train, default_eval = stage_prompts(cfg, data_cfg)
        from common.memory import release_freed_memory

        release_freed_memory()  # the IMDB texts the prompts were cut from (~200 MB) go back before training
        prompts = default_train if prompts is None else prompts
        eval_prompts = default_eval if eval_prompts is None else eval_prompts
    # 3. train
    run_id = run_id or new_run_id(f"{cfg.algorithm}-")  # ppo-, rloo-, grpo-
    from accelerate import PartialState

    if work_dir is None:
        work_dir = policies_dir() / f"{WORK_PREFIX}{run_id}"
        if PartialState().is_main_process:
            claim_run(work_dir)  # who trains it: `python -m db stats` and clean-runs read this
    work_dir = Path(work_dir)
    result = train(
        (model, tokenizer),
        reward_fn,
        prompts,
        cfg,
        eval_prompts=eval_prompts,
        gold_fn=gold_fn,
        eval_fns=eval_fns,
        work_dir=work_dir,
        resume=resume,
        progress=progress,
    )
    if not save or not PartialState().is_main_process:
        return StageResult(result)
    # 4. save, register, then point latest (in this order: see the docstring)
    folder = Path(out) if out is not None else policies_dir() / run_id
    save_policy(result, folder)
    version = register(folder, start, result.summary, engine) if register_version else None
    if out is None:
        write_latest(policies_dir(), run_id)
    if temporary:
        shutil.rmtree(work_dir, ignore_errors=True)
    return StageResult(result, folder, version)
