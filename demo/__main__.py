"""CLI: ``python -m demo`` (``make demo``, ``ROUNDS=2``, ``PAIRS=1``, ``CONFIG=configs/smoke.yaml``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from common.runtime import configure_cpu

# before torch loads: idle OpenMP threads spin when the demo has the machine to itself (common/runtime.py)
os.environ.update(configure_cpu())

from common.assets import offline_env
from common.config import add_config_args, describe
from common.errors import cli_entry, setup_logging
from demo.config import DemoConfig, Profile


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m demo",
        description="The whole RLHF loop with simulated labellers: base policy -> completions -> labels -> "
        "reward model -> PPO -> report in $RLHF_ARTIFACTS/demo/<run-id>/.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="demo settings (section `demo` of the profile, --set KEY=VALUE; another section's keys as "
        "--set SECTION.KEY=VALUE, e.g. --set reward.backbone=DIR):\n" + describe(DemoConfig),
    )
    p.add_argument(
        "command",
        nargs="?",
        default="run",
        choices=["run", "overoptimization"],
        help="run = the loop (default); overoptimization = add a tiny-KL PPO run to an existing report",
    )
    add_config_args(p)
    p.add_argument("--rounds", type=int, default=None, help="labelling rounds (overrides demo.rounds)")
    p.add_argument(
        "--n-labels", type=int, default=None, help="simulated judgements per round (overrides demo.n_labels)"
    )
    p.add_argument(
        "--overoptimization",
        action="store_true",
        help="also run PPO with (almost) no KL penalty and plot proxy and gold against sqrt(KL)",
    )
    p.add_argument("--no-kl", action="store_true", help="same as --overoptimization with demo.overopt_kl_coef=0")
    p.add_argument(
        "--pairwise",
        action="store_true",
        help="after PPO, a pairwise round: comparisons of the base policy's completions, simulated pair "
        "judgements, DPO from them, and the win rate of the final PPO policy over the base (demo.pairs.enabled)",
    )
    p.add_argument(
        "--run",
        type=Path,
        default=None,
        help="report folder or run id (under $RLHF_ARTIFACTS/demo/) for `overoptimization` (default: the newest)",
    )
    p.add_argument("--run-id", default=None, help="name of the report folder (default: demo-<timestamp>)")
    p.add_argument("--overwrite", action="store_true", help="let --run-id replace an existing demo report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def preflight(profile: Profile) -> None:
    """Before any stage runs: the artefacts folders are writable, with room for about twice what the
    loop writes (a base policy and its checkpoint, a reward model and its seed cache per round, a
    PPO policy and its checkpoints per round), and the database accepts a write."""
    from common.paths import artifacts_root, base_policy_dir, check_writable_dirs, weights_size

    pre = profile.pretrain
    base = profile.demo.base_policy
    policy_mb = weights_size(base_policy_dir() if base == "auto" else base) / (1 << 20)
    if not policy_mb:
        params = (pre.vocab_size or 50257) * pre.n_embd + pre.n_ctx * pre.n_embd + 12 * pre.n_layer * pre.n_embd**2
        policy_mb = 4 * params / (1 << 20)
    reward_mb = weights_size(profile.reward.backbone_or_default) / (1 << 20) or 100.0
    rounds = profile.demo.rounds + (1 if profile.demo.overoptimization else 0)
    written = 4 * policy_mb + rounds * (2 * reward_mb + 4 * policy_mb)
    if profile.demo.pairs.enabled:
        written += 2 * policy_mb  # the DPO policy and its work folder
    root = artifacts_root()
    check_writable_dirs(
        [root / "demo", root / "reward_models", root / "policies", root], need_mb=2 * written + 20, stage="the demo"
    )
    import db
    from db.engine import check_writable

    engine = db.connect()
    try:
        check_writable(engine, stage="the demo")
    finally:
        engine.dispose()


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    offline_env()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    overrides = list(args.overrides)
    if args.rounds is not None:
        overrides.append(f"rounds={args.rounds}")
    if args.n_labels is not None:
        overrides.append(f"n_labels={args.n_labels}")
    if args.overoptimization or args.no_kl:
        overrides.append("overoptimization=true")
    if args.no_kl:
        overrides.append("overopt_kl_coef=0")
    if args.pairwise:
        overrides.append("pairs.enabled=true")
    if args.config is not None:
        os.environ["RLHF_CONFIG"] = str(args.config)  # anything a stage reads itself comes from the same profile
    profile = Profile.load(args.config, overrides)
    if args.run_id is not None and args.command != "overoptimization":
        from common.paths import artifacts_root, check_run_id

        check_run_id(args.run_id, artifacts_root() / "demo", overwrite=args.overwrite)
    preflight(profile)
    from demo import run as demo_run

    progress = not args.quiet
    if args.command == "overoptimization":
        demo_run.overoptimization_only(profile, args.run, progress=progress)
    else:
        demo_run.run(profile, run_id=args.run_id, progress=progress)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
