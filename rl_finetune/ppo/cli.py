"""``python -m rl_finetune ppo``: fine-tune a policy with PPO against the latest reward model.

Prompts are IMDB review openings (train split), eval prompts come from the test split. The run
writes into ``$RLHF_ARTIFACTS/policies/.work-<run-id>/`` while training (metrics, checkpoints) and
then saves the policy atomically to ``$RLHF_ARTIFACTS/policies/<run-id>/`` (+ ``latest``),
registered in the database as a policy version whose parent is the starting policy: all of it
:func:`rl_finetune.ppo.stage.run_stage`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# Idle OpenMP threads spin on an idle machine and sleep on a busy one, where a spinning thread steals the
# core its sibling needs (common/runtime.py has the measurement). Only effective before torch is first imported;
# an explicit OMP_WAIT_POLICY wins.
from common.runtime import configure_cpu

os.environ.update(configure_cpu())

from common.config import add_config_args, describe, load_config
from common.errors import UserError, cli_entry, setup_logging
from rl_finetune.ppo.config import PPOConfig

#: ``python -m rl_finetune rloo`` and ``grpo`` are this command with ``--set algorithm=rloo|grpo`` (docs/ppo.md)
DESCRIPTIONS = {
    "ppo": "PPO fine-tuning of a policy against a learned reward model, with a KL leash to the starting policy.",
    "rloo": "RLOO fine-tuning (PPO's loop with k samples per prompt and a leave-one-out baseline, no value head) "
    "against a learned reward model, with a KL leash to the starting policy.",
    "grpo": "GRPO fine-tuning (PPO's loop with k samples per prompt and group-normalised advantages, no value head) "
    "against a learned reward model, with a KL leash to the starting policy.",
}


def build_parser(algorithm: str = "ppo") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m rl_finetune {algorithm}",
        description=DESCRIPTIONS[algorithm],
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
        "--no-kl", action="store_true", help="no KL penalty (init_kl_coef=0, no kl_target): watch the reward get hacked"
    )
    p.add_argument("--gold", action="store_true", help="also score eval samples with the gold judge (common.gold)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: $RLHF_ARTIFACTS/policies/<run-id>)")
    p.add_argument(
        "--overwrite", action="store_true", help="let --out replace an existing policy folder (never another kind)"
    )
    p.add_argument("--no-db", action="store_true", help="do not register the new policy in the database")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


#: Bytes per parameter-sized copy a run writes: the saved policy (1) and a checkpoint (weights,
#: Adam's two moments: 3), times two for the free space asked (a new checkpoint beside the old).
COPIES_WRITTEN = 4
UNKNOWN_POLICY_MB = 600.0  # a hub name (not on disk yet): about SmolLM2-135M in fp32


def preflight(cfg: PPOConfig, args):
    """Before any model loads: the policies folder (and --out's) is writable with room for about twice
    what the run writes, and the database accepts a write unless --no-db; returns the engine (or None)."""
    from common.paths import check_writable_dirs, policies_dir, weights_size

    spec = args.policy
    size_mb = UNKNOWN_POLICY_MB
    if spec in (None, "base", "latest") or (spec and Path(spec).is_dir()):
        from base_policy.loading import resolve_policy

        size_mb = weights_size(resolve_policy(spec)) / (1 << 20) or UNKNOWN_POLICY_MB
    copies = COPIES_WRITTEN if cfg.checkpoint_interval else 1
    folders = [policies_dir()] + ([Path(args.out).parent] if args.out is not None else [])
    check_writable_dirs(folders, need_mb=2 * copies * size_mb + 20, stage="PPO")
    if args.no_db:
        return None
    import db
    from db.engine import check_writable

    engine = db.connect()
    check_writable(engine, stage="PPO")
    return engine


def learner_overrides(algorithm: str, overrides: list[str]) -> list[str]:
    """``--set`` overrides for ``python -m rl_finetune <algorithm>``: ``algorithm=<algorithm>`` first; an
    ``algorithm=`` override that names another learner is refused (which one did the user mean?)."""
    if algorithm == "ppo":
        return overrides
    for item in overrides:
        key, _, value = item.partition("=")
        if key.strip().removeprefix("ppo.") == "algorithm" and value.strip() != algorithm:
            raise UserError(
                f"`python -m rl_finetune {algorithm}` was given --set {item.strip()}.",
                f"drop the --set, or run `python -m rl_finetune {value.strip()}` (or `ppo --set algorithm=...`).",
            )
    return [f"algorithm={algorithm}", *overrides]


@cli_entry
def main(argv: list[str] | None = None, algorithm: str = "ppo") -> int:
    args = build_parser(algorithm).parse_args(argv)
    setup_logging(args.verbose)
    from common.assets import offline_env

    offline_env()
    overrides = learner_overrides(algorithm, list(args.overrides))
    if args.no_kl:
        overrides += ["init_kl_coef=0.0", "kl_target=null", "kl_horizon=null"]
    cfg = load_config(PPOConfig, "ppo", args.config, overrides)
    if args.out is not None:
        from common.paths import check_output_folder

        check_output_folder(args.out, kind="policy", overwrite=args.overwrite)  # before any work
    engine = preflight(cfg, args)
    from common.imdb import DataConfig
    from rl_finetune.ppo.stage import run_stage

    gold_fn = None
    if args.gold:
        from common.gold import GoldJudge

        gold_fn = GoldJudge.load_or_fit().score
    stage = run_stage(
        cfg,
        policy=args.policy,
        reward=args.reward,
        data_cfg=load_config(DataConfig, "data", args.config),
        gold_fn=gold_fn,
        out=args.out,
        resume=args.resume,
        register_version=not args.no_db,
        engine=engine,
    )
    if stage.folder is None:  # not the main process
        return 0
    s = stage.result.summary
    print(f"saved {stage.folder}" + (f" (policy version {stage.version})" if stage.version else ""))
    for key in ("eval/reward", "eval/p_good", "eval/gold", "eval/kl", "eval/distinct_2"):
        if f"{key}_before" in s:
            print(f"  {key}: {s[f'{key}_before']:.3f} -> {s[f'{key}_after']:.3f}")
    print(
        f"  {s['steps']} steps in {s['wall_time_s']:.0f} s ({s['s_per_step']:.2f} s/step, {s['samples_per_s']:.1f} episodes/s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
