"""``python -m rl_finetune compare`` (``make compare``) and ``python -m rl_finetune best-of-n``.

``compare`` runs every stage-3 learner of the ``compare`` section from one labelled database (``RLHF_DB_URL``)
and one start policy within a per-method time budget, and writes one report folder
(``$RLHF_ARTIFACTS/compare/<run-id>/``: report.md, frontier.png, gold_vs_time.png, compare.json); see
:mod:`rl_finetune.compare.run` and docs/compare.md. ``best-of-n`` prints the best-of-n rows alone (no training).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from common.runtime import configure_cpu

os.environ.update(configure_cpu())  # before torch loads: see rl_finetune/ppo/cli.py

from common.config import add_config_args, describe, load_config, read_profile, split_overrides
from common.errors import UserError, cli_entry, setup_logging
from rl_finetune.compare.config import METHODS, CompareConfig, parse_methods

#: The sections ``--set section.key=value`` may reach from the compare command (the rest: ``compare``).
SECTIONS = ("compare", "ppo", "kto", "dpo", "data")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rl_finetune compare",
        description="Every stage-3 learner (PPO, RLOO, GRPO, best-of-n, KTO, DPO) from one labelled database and "
        "one start policy, each within a time budget, scored on the same held-out prompts by the reward model "
        "and the gold judge; one report with the gold-vs-KL frontier.",
        epilog="config keys (section compare; --set KEY=VALUE, or --set ppo.KEY=VALUE, kto.KEY=..., dpo.KEY=...):\n"
        + describe(CompareConfig),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    common_args(p)
    p.add_argument(
        "--methods", default=None, help=f"comma-separated subset of {','.join(METHODS)} (default: compare.methods)"
    )
    p.add_argument("--out", type=Path, default=None, help="report folder (default: $RLHF_ARTIFACTS/compare/<run-id>)")
    return p


def common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", default=None, help="start policy: folder or hub name (default: the base policy)")
    p.add_argument("--reward", default=None, help="reward model folder (default: the latest reward model)")
    p.add_argument("-v", "--verbose", action="store_true")


def grouped_overrides(overrides: list[str]) -> dict[str, list[str]]:
    """``--set`` strings by section (no section: ``compare``); a section the command does not use is refused."""
    groups = split_overrides(overrides, "compare")
    for section in groups:
        if section not in SECTIONS:
            raise UserError(
                f"--set {section}.… does not apply to the compare command.", f"set keys of {', '.join(SECTIONS)}."
            )
    return groups


def load_gold():
    from common.gold import GoldJudge

    return GoldJudge.load_or_fit().score


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from common.assets import offline_env

    offline_env()
    profile = read_profile(args.config)
    groups = grouped_overrides(list(args.overrides))
    if args.methods is not None:
        groups.setdefault("compare", []).append(f"methods={parse_methods(args.methods)}")
    cfg = load_config(CompareConfig, "compare", profile, groups.get("compare", []))
    from rl_finetune.ppo.config import PPOConfig

    ppo = load_config(PPOConfig, "ppo", profile, groups.get("ppo", []))
    import db
    from common.imdb import DataConfig
    from common.paths import artifacts_root, new_run_id
    from rl_finetune.compare.run import run_compare

    out = args.out if args.out is not None else artifacts_root() / "compare" / new_run_id("compare-")
    run = run_compare(
        cfg, ppo, engine=db.connect(), gold_fn=load_gold(), out=out, policy=args.policy, reward=args.reward,
        data_cfg=load_config(DataConfig, "data", profile, groups.get("data", [])), profile=profile, overrides=groups,
    )  # fmt: skip
    print_table(run.summary["table"])
    from rl_finetune.compare.results import verdict

    print(verdict(run.summary["winners"]))
    print(f"report: {run.folder / 'report.md'}")
    return 0


def print_table(rows: list[dict]) -> None:
    print(
        f"{'method':<10} {'gold':>6} {'95% interval':>14} {'reward':>7} {'KL':>7} {'dist-2':>6} {'NLL':>6} {'s':>6}  status"
    )
    for r in rows:
        lo, hi = r["gold_ci95"]
        print(
            f"{r['method']:<10} {_n(r['gold_rate']):>6} {_n(lo) + '-' + _n(hi):>14} {_n(r['reward']):>7} "
            f"{_n(r['kl']):>7} {_n(r['distinct_2']):>6} {_n(r['fluency_nll'], 2):>6} {_n(r['wall_s'], 0):>6}  {r['status']}"
        )


def _n(x, digits: int = 3) -> str:
    return "–" if x is None or x != x else f"{x:.{digits}f}"


# ------------------------------------------------------------------ best-of-n


def build_best_of_n_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rl_finetune best-of-n",
        description="Best-of-n sampling against the reward model: n completions per held-out prompt from the start "
        "policy, the reward model's best kept and scored with the gold judge; KL = log n - (n - 1)/n.",
        epilog="the n list, the number of held-out prompts and the seed come from the compare section "
        "(--set best_of_n=[1,4,16]); sampling from the ppo section (--set ppo.gen_kwargs.max_new_tokens=24).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    common_args(p)
    p.add_argument("--n", default=None, help="comma-separated n values (default: compare.best_of_n)")
    p.add_argument("--out", type=Path, default=None, help="also write the rows to this JSON file")
    return p


@cli_entry
def best_of_n_main(argv: list[str] | None = None) -> int:
    args = build_best_of_n_parser().parse_args(argv)
    setup_logging(args.verbose)
    from common.assets import offline_env

    offline_env()
    profile = read_profile(args.config)
    groups = grouped_overrides(list(args.overrides))
    if args.n is not None:
        groups.setdefault("compare", []).append(f"best_of_n=[{args.n}]")
    cfg = load_config(CompareConfig, "compare", profile, groups.get("compare", []))
    from rl_finetune.ppo.config import PPOConfig

    ppo = load_config(PPOConfig, "ppo", profile, groups.get("ppo", []))
    from common.imdb import DataConfig
    from rl_finetune.compare.run import best_of_n_rows

    data_cfg = load_config(DataConfig, "data", profile, groups.get("data", []))
    rows = best_of_n_rows(cfg, ppo, gold_fn=load_gold(), policy=args.policy, reward=args.reward, data_cfg=data_cfg)
    print(f"{'n':>3} {'KL':>6} {'gold':>6} {'95% interval':>14} {'reward':>7} {'dist-2':>6} {'NLL':>6} {'s':>6}")
    for r in rows:
        print(
            f"{int(r['eval/best_of_n']):>3} {_n(r['eval/kl']):>6} {_n(r['eval/gold_positive']):>6} "
            f"{_n(r['eval/gold_ci95_low']) + '-' + _n(r['eval/gold_ci95_high']):>14} {_n(r['eval/reward']):>7} "
            f"{_n(r['eval/distinct_2']):>6} {_n(r['eval/fluency_nll'], 2):>6} {_n(r['elapsed_s'], 1):>6}"
        )
    if args.out is not None:
        from common.paths import write_json
        from rl_finetune.compare.results import json_safe

        write_json(args.out, json_safe({"rows": rows, "policy": args.policy, "reward": args.reward}))
        print(f"wrote {args.out}")
    return 0
