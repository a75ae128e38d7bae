"""``python -m rl_finetune dpo`` and ``python -m rl_finetune kto``: the offline learners from the database's labels.

- ``dpo``: the pair judgements that chose a side (or ``--pairs FILE``, TRL's preference format);
- ``kto``: the good/bad judgements, combined by majority per completion (skips and ties dropped).

Everything is checked before any model loads (the labels, ``--out``/``--run-id``, free space, a writable
database); the run trains in ``$RLHF_ARTIFACTS/policies/.work-<run-id>/``, saves the policy atomically to
``policies/<run-id>/`` (``dpo-<id>`` / ``kto-<id>``), registers it as a policy version whose parent is the
starting policy, and only then points ``policies/latest`` at it, in PPO's order
(:func:`rl_finetune.ppo.stage.run_stage`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from common.runtime import configure_cpu

os.environ.update(configure_cpu())  # as PPO's command: before torch loads (common/runtime.py)

from common.config import add_config_args, describe, load_config
from common.errors import cli_entry, setup_logging
from rl_finetune.offline.config import DPOConfig, KTOConfig

DESCRIPTIONS = {
    "dpo": "DPO fine-tuning of a policy straight from pairwise comparisons (the sigmoid loss with beta), with a "
    "frozen reference: no reward model, no sampling.",
    "kto": "KTO fine-tuning of a policy straight from good/bad labels of single completions (the KTO loss with its "
    "reference point, class weights and beta), with a frozen reference: no reward model, no sampling.",
}
CONFIGS = {"dpo": DPOConfig, "kto": KTOConfig}
UNKNOWN_POLICY_MB = 600.0  # a hub name (not on disk yet): about SmolLM2-135M in fp32


def build_parser(method: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m rl_finetune {method}",
        description=DESCRIPTIONS[method],
        epilog=f"config keys (section {method}, set with --set KEY=VALUE):\n" + describe(CONFIGS[method]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("--policy", default=None, help="starting policy: folder or hub name (default: the base policy)")
    if method == "dpo":
        p.add_argument(
            "--pairs", type=Path, default=None,
            help="train on this preference file (JSONL or a datasets folder with prompt, chosen, rejected) "
            "instead of the database's comparisons",
        )  # fmt: skip
    p.add_argument("--gold", action="store_true", help="also score eval samples with the gold judge (common.gold)")
    p.add_argument("--no-eval", action="store_true", help="no held-out eval (no sampling at all)")
    p.add_argument(
        "--time-budget", type=float, default=None, help="stop after this many seconds (default: max_minutes)"
    )
    p.add_argument(
        "--run-id", default=None, help=f"name of the run folder under policies/ (default: {method}-<time>-<hex>)"
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default: $RLHF_ARTIFACTS/policies/<run-id>)")
    p.add_argument("--overwrite", action="store_true", help="let --out or --run-id replace an existing policy")
    p.add_argument("--no-db", action="store_true", help="do not register the new policy in the database")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def output_folder(method: str, args) -> tuple[Path, str, bool]:
    """(the folder to save to, the run id, whether ``latest`` moves to it), checked before any work."""
    from common.paths import check_output_folder, check_run_id, new_run_id, policies_dir

    run_id = args.run_id or new_run_id(f"{method}-")
    if args.run_id is not None:
        check_run_id(run_id, policies_dir(), overwrite=args.overwrite)
    if args.out is not None:
        check_output_folder(args.out, kind="policy", overwrite=args.overwrite)
        return Path(args.out), run_id, False
    return policies_dir() / run_id, run_id, True


def preflight(method: str, args, out: Path):
    """Free space for about twice the saved policy under policies/ (and --out's folder), and, unless
    --no-db, a database that accepts a write; returns the engine (or None)."""
    from common.paths import check_writable_dirs, policies_dir, weights_size

    spec = args.policy
    size_mb = UNKNOWN_POLICY_MB
    if spec in (None, "base", "latest") or (spec and Path(spec).is_dir()):
        from base_policy.loading import resolve_policy

        size_mb = weights_size(resolve_policy(spec)) / (1 << 20) or UNKNOWN_POLICY_MB
    check_writable_dirs([policies_dir(), out.parent], need_mb=2 * size_mb + 20, stage=method.upper())
    needs_db = not args.no_db or method == "kto" or getattr(args, "pairs", None) is None
    if not needs_db:
        return None
    import db

    engine = db.connect()
    if not args.no_db:
        from db.engine import check_writable

        check_writable(engine, stage=method.upper())
    return engine


def read_labels(method: str, args, engine) -> list:
    """The checked training data: DPO's pairs or KTO's (prompt, completion, good) examples."""
    from rl_finetune.offline import data

    if method == "dpo":
        pairs = data.dpo_pairs(engine, args.pairs)
        data.check_pairs(pairs)
        return pairs
    examples = data.kto_examples(engine)
    data.check_kto_examples(examples)
    return examples


@cli_entry
def main(argv: list[str] | None = None, method: str = "dpo") -> int:
    args = build_parser(method).parse_args(argv)
    setup_logging(args.verbose)
    from common.assets import offline_env

    offline_env()
    cfg = load_config(CONFIGS[method], method, args.config, list(args.overrides))
    out, run_id, move_latest = output_folder(method, args)
    engine = preflight(method, args, out)
    labels = read_labels(method, args, engine)  # bad labels: refused here, before any model loads

    eval_fn = None
    if not args.no_eval:
        from common.imdb import DataConfig
        from rl_finetune.offline.evaluate import HeldOutEval, held_out_prompts

        gold_fn = None
        if args.gold:
            from common.gold import GoldJudge

            gold_fn = GoldJudge.load_or_fit().score
        prompts = held_out_prompts(cfg, load_config(DataConfig, "data", args.config))
        eval_fn = HeldOutEval(prompts, cfg, gold_fn=gold_fn, title=f"{method.upper()} samples")

    from rl_finetune.offline import train_dpo, train_kto

    train = train_dpo if method == "dpo" else train_kto
    result = train(args.policy, labels, out, cfg, eval_fn=eval_fn, time_budget_s=args.time_budget)

    # save (done), register, then point latest: a failure leaves latest on a saved, registered policy
    version = None
    if not args.no_db:
        from rl_finetune.ppo.stage import register

        version = register(out, result["start_policy"], result["summary"], engine)
    if move_latest:
        from common.paths import policies_dir, write_latest

        write_latest(policies_dir(), run_id)
    print(f"saved {out}" + (f" (policy version {version})" if version else ""))
    s = result["summary"]
    for key in ("eval/gold", "eval/gold_positive", "eval/kl", "eval/distinct_2"):
        if f"{key}_before" in s:
            print(f"  {key}: {s[f'{key}_before']:.3f} -> {s[f'{key}_after']:.3f}")
    for key in ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "kl_ref"):
        if f"train/{key}" in s:
            print(f"  {key} (last step): {s[f'train/{key}']:.3f}")
    print(f"  {result['steps']} steps on {result['labels_used']} labels in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
