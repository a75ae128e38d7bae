"""``python -m reward_training``: train a reward model (default), score the queue, or score texts."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from common.runtime import configure_cpu

os.environ.update(configure_cpu())  # before torch loads (common/runtime.py)

from common.config import add_config_args, describe, load_config
from common.errors import cli_entry, setup_logging
from reward_training.config import RewardConfig

log = logging.getLogger("reward_training")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m reward_training",
        description="Train the reward model: seed on IMDB snippets (cached), fine-tune on the human labels in "
        "the database, evaluate against a TF-IDF baseline, save to $RLHF_ARTIFACTS/reward_models/<run-id>.",
        epilog="commands:\n  train    (default) train, evaluate, save, register\n"
        "  score    write P(good) of unlabelled completions into the database\n"
        "  predict  print P(good) for the texts given after it\n\n"
        "config keys (section `reward`, change with --set key=value):\n" + describe(RewardConfig),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("command", nargs="?", default="train", choices=["train", "score", "predict"])
    p.add_argument("texts", nargs="*", help="texts for `predict`")
    add_config_args(p)
    p.add_argument(
        "--require-labels",
        action="store_true",
        help="fail instead of training a seed-only model when there are no human labels",
    )
    p.add_argument(
        "--learning-curve",
        action="store_true",
        help="also measure accuracy vs number of human labels, seeded vs unseeded (slow)",
    )
    p.add_argument(
        "--score-queue",
        action="store_true",
        help="after training, write P(good) of unlabelled completions into the database (for the app's 'uncertain first' order)",
    )
    p.add_argument("--run-id", default=None, help="name of the output folder (default: a timestamp)")
    p.add_argument("--overwrite", action="store_true", help="let --run-id replace an existing reward model")
    p.add_argument("--model", default=None, help="reward model folder for `score`/`predict` (default: the latest)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


UNKNOWN_BACKBONE_MB = 100.0  # a hub name: about MiniLM/DistilBERT-sized


def preflight(cfg: RewardConfig) -> None:
    """Before any data or model loads: the reward model folder and the seed cache are writable, with room
    for about twice what the run writes (the seeded backbone in the cache, and the run folder with its
    ensemble members, each at most a backbone's size)."""
    from common.paths import check_writable_dirs, reward_models_dir, weights_size
    from reward_training.training import seed_cache_root

    size_mb = weights_size(cfg.backbone_or_default) / (1 << 20) or UNKNOWN_BACKBONE_MB
    members = cfg.ensemble_size - 1 if cfg.ensemble == "members" else 0
    check_writable_dirs(
        [reward_models_dir(), seed_cache_root()],
        need_mb=2 * (2 + members) * size_mb + 20,
        stage="the reward model stage",
    )


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # `predict --model DIR "text"` works too
    setup_logging(args.verbose)
    from common.assets import offline_env

    offline_env()
    if args.command == "predict":
        from reward_training.api import reward_model

        texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
        for text, p in reward_model(texts, args.model).items():
            print(json.dumps({"text": text, "p_good": round(p, 4)}))
        return 0
    if args.command not in ("score", "predict") and args.run_id is not None:
        from common.paths import check_run_id, reward_models_dir

        check_run_id(args.run_id, reward_models_dir(), overwrite=args.overwrite)  # before any work is done
    cfg = None
    if args.command == "train":
        cfg = load_config(RewardConfig, "reward", profile=args.config, overrides=args.overrides)
        preflight(cfg)
    import db
    from db.engine import check_writable

    engine = db.connect()
    check_writable(engine, stage="the reward model stage")
    if args.command == "score":
        from reward_training.api import score_completions

        n = score_completions(engine, args.model)
        print(json.dumps({"scored": n}))
        return 0
    from common.imdb import DataConfig
    from reward_training.training import train

    data_cfg = load_config(DataConfig, "data", profile=args.config)
    out = train(
        cfg,
        engine,
        data_cfg=data_cfg,
        require_labels=args.require_labels,
        learning_curve=args.learning_curve,
        run_id=args.run_id,
        progress=not args.no_progress,
    )
    if args.score_queue:
        from reward_training.api import score_completions

        log.info("scored %d unlabelled completions", score_completions(engine, out))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
