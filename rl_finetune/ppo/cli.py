"""``python -m rl_finetune ppo``: fine-tune a policy with PPO against the latest reward model.

Prompts are IMDB review openings (train split), eval prompts come from the test split. The run
writes into ``$RLHF_ARTIFACTS/policies/.work-<run-id>/`` while training (metrics, checkpoints) and
then saves the policy atomically to ``$RLHF_ARTIFACTS/policies/<run-id>/`` (+ ``latest``),
registered in the database as a policy version whose parent is the starting policy.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a small, shared CPU a spinning thread steals the
# core its sibling needs (measured here, 2 cores under load: one PPO step took 1.3 s instead of up
# to 28 s). Only effective before torch is first imported; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from common.config import add_config_args, describe, load_config
from common.errors import UserError, cli_entry, setup_logging
from common.paths import policies_dir, write_latest
from rl_finetune.ppo.config import PPOConfig

log = logging.getLogger(__name__)
WORK_PREFIX = ".work-"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rl_finetune ppo",
        description="PPO fine-tuning of a policy against a learned reward model, with a KL leash to the starting policy.",
        epilog="config keys (section ppo, set with --set KEY=VALUE):\n" + describe(PPOConfig),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("--policy", default=None, help="starting policy: folder or hub name (default: the base policy)")
    p.add_argument(
        "--reward", default=None, help="reward model folder (default: the latest under $RLHF_ARTIFACTS/reward_models)"
    )
    p.add_argument("--resume", action="store_true", help="continue the newest unfinished run from its checkpoint")
    p.add_argument(
        "--no-kl", action="store_true", help="no KL penalty (init_kl_coef=0, no target): watch the reward get hacked"
    )
    p.add_argument("--gold", action="store_true", help="also score eval samples with the gold judge (common.gold)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: $RLHF_ARTIFACTS/policies/<run-id>)")
    p.add_argument("--no-db", action="store_true", help="do not register the new policy in the database")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _prompts(cfg: PPOConfig, profile) -> tuple[list[str], list[str]]:
    from common.imdb import DataConfig, load_imdb, make_prompts, read_prompt_file

    data_cfg = load_config(DataConfig, "data", profile)
    if data_cfg.prompt_file:
        prompts = read_prompt_file(data_cfg.prompt_file)
        n_eval = min(cfg.num_eval_prompts, max(1, len(prompts) // 5))
        return prompts[n_eval:] or prompts, prompts[:n_eval]
    ds = load_imdb(data_cfg)
    train = make_prompts(list(ds["train"]["text"]), cfg.num_train_prompts, data_cfg)
    held = make_prompts(list(ds["test"]["text"]), cfg.num_eval_prompts, data_cfg, seed=data_cfg.seed + 1)
    return train, held


def _reward_fns(path, cfg: PPOConfig):
    """(reward_fn for training, {"p_good": P(good)} for eval) from the learned reward model."""
    from reward_training import load_reward_fn

    reward_fn = load_reward_fn(path, kind=cfg.reward_kind, batch_size=cfg.reward_batch_size)
    if cfg.reward_kind == "prob":
        return reward_fn, {}
    if cfg.reward_kind == "logit_diff":  # two classes: P(good) = sigmoid(logit difference)
        return reward_fn, {"p_good": lambda texts: torch.sigmoid(reward_fn(texts))}
    return reward_fn, {"p_good": load_reward_fn(path, kind="prob", batch_size=cfg.reward_batch_size)}


def _latest_unfinished() -> Path | None:
    root = policies_dir()
    runs = (
        sorted(
            (p for p in root.glob(WORK_PREFIX + "*") if (p / "checkpoint" / "state.json").is_file()),
            key=lambda p: p.stat().st_mtime,
        )
        if root.is_dir()
        else []
    )
    return runs[-1] if runs else None


def register(final_dir: Path, start_policy: str, summary: dict) -> int | None:
    """Record the new policy in the database, parent = the starting policy's version. Skipped (with a
    warning) when the database is unavailable: PPO itself never needs one."""
    try:
        import db
        from base_policy.registry import ensure_registered, register_policy

        engine = db.connect()
        parent = ensure_registered(engine, start_policy)
        metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}
        return register_policy(final_dir, name=final_dir.name, metrics=metrics, parent_id=parent, engine=engine)
    except (ImportError, UserError, OSError) as err:
        log.warning("the new policy was saved but not registered in the database: %s", err)
    except Exception as err:  # a database problem must not lose a trained policy
        log.warning("the new policy was saved but not registered in the database (%s: %s)", type(err).__name__, err)
    return None


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from common.assets import offline_env

    offline_env()
    overrides = list(args.overrides)
    if args.no_kl:
        overrides += ["init_kl_coef=0.0", "target=null", "horizon=null"]
    cfg = load_config(PPOConfig, "ppo", args.config, overrides)

    from base_policy.loading import load_policy, resolve_policy
    from rl_finetune.ppo.trainer import save_policy, train

    work_dir = _latest_unfinished() if args.resume else None
    if args.resume and work_dir is None:
        log.warning("--resume: no unfinished run under %s; starting a new one", policies_dir())
    run_id = work_dir.name[len(WORK_PREFIX) :] if work_dir is not None else None
    if run_id is None:
        from common.paths import new_run_id

        run_id = new_run_id("ppo-")
        work_dir = policies_dir() / f"{WORK_PREFIX}{run_id}"
    start = resolve_policy(args.policy)
    model, tok = load_policy(start)
    reward_fn, eval_fns = _reward_fns(args.reward, cfg)
    gold_fn = None
    if args.gold:
        from common.gold import GoldJudge

        gold_fn = GoldJudge.load_or_fit().score
    prompts, eval_prompts = _prompts(cfg, args.config)
    result = train(
        (model, tok),
        reward_fn,
        prompts,
        cfg,
        eval_prompts=eval_prompts,
        gold_fn=gold_fn,
        eval_fns=eval_fns,
        work_dir=work_dir,
        resume=args.resume,
    )
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return 0
    final = args.out or policies_dir() / run_id
    save_policy(result, final)
    if args.out is None:
        write_latest(policies_dir(), run_id)
    version = None if args.no_db else register(final, start, result.summary)
    shutil.rmtree(work_dir, ignore_errors=True)
    s = result.summary
    print(f"saved {final}" + (f" (policy version {version})" if version else ""))
    for key in ("eval/reward", "eval/p_good", "eval/gold", "eval/kl", "eval/distinct_2"):
        if f"{key}_before" in s:
            print(f"  {key}: {s[f'{key}_before']:.3f} -> {s[f'{key}_after']:.3f}")
    print(
        f"  {s['steps']} steps in {s['wall_time_s']:.0f} s ({s['s_per_step']:.2f} s/step, {s['samples_per_s']:.1f} episodes/s)"
    )
    return 0
