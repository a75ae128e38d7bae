"""``python -m base_policy pretrain|generate``: stage 1, the base policy (training it, and sampling it into the labelling queue)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

# Idle OpenMP threads spin on an idle machine and sleep on a busy one (common/runtime.py). Must precede torch.
from common.runtime import configure_cpu

os.environ.update(configure_cpu())

from common.errors import UserError, cli_entry, setup_logging

log = logging.getLogger("base_policy")

COMMANDS = {
    "pretrain": "train the small GPT-2 base policy on IMDB into $RLHF_ARTIFACTS/base_policy (make base-model)",
    "generate": "sample completions from a policy into the labelling queue (make generate)",
}


def pretrain_parser() -> argparse.ArgumentParser:
    from base_policy.pretrain import PretrainConfig
    from common.config import add_config_args, describe

    p = argparse.ArgumentParser(
        prog="python -m base_policy pretrain",
        description=COMMANDS["pretrain"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (section `pretrain`, set with --set key=value):\n" + describe(PretrainConfig),
    )
    add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from $RLHF_ARTIFACTS/checkpoints/pretrain/last.pt")
    p.add_argument("--out", default=None, help="output folder (default $RLHF_ARTIFACTS/base_policy)")
    p.add_argument("--no-register", action="store_true", help="do not record the model version in the database")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def generate_parser() -> argparse.ArgumentParser:
    from base_policy.generate import GenerateConfig
    from common.config import add_config_args, describe

    p = argparse.ArgumentParser(
        prog="python -m base_policy generate",
        description=COMMANDS["generate"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (section `generate`, set with --set key=value):\n" + describe(GenerateConfig),
    )
    add_config_args(p)
    p.add_argument(
        "--policy", default=None, help="policy folder or hub name; 'base' (default) or 'latest' (newest PPO policy)"
    )
    p.add_argument("-n", "--n", type=int, default=None, help="completions to write")
    p.add_argument("--completions-per-prompt", type=int, default=None)
    p.add_argument("--prompts-per-batch", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--prompt-file", default=None, help="one prompt per line instead of IMDB openings")
    p.add_argument(
        "--print", dest="print_only", action="store_true", help="print JSON lines instead of writing to the database"
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def run_pretrain(argv: list[str]) -> int:
    from base_policy.pretrain import (
        PretrainConfig,
        format_summary,
        mark_finished,
        register_base_policy,
        save_base_policy,
        train,
    )
    from common.assets import offline_env
    from common.config import load_config
    from common.imdb import DataConfig

    args = pretrain_parser().parse_args(argv)
    setup_logging(args.verbose)
    cfg = load_config(PretrainConfig, "pretrain", args.config, args.overrides)
    data_cfg = load_config(DataConfig, "data", args.config)
    from pathlib import Path

    out = Path(args.out) if args.out else None
    engine = pretrain_preflight(cfg, out, register=not args.no_register)
    if data_cfg.source == "local" and not cfg.init_from:
        offline_env()
    result = train(cfg, data_cfg, resume=args.resume, progress=not args.no_progress)
    # save, then register: a failed registration leaves the new folder unregistered, and the
    # registry's fingerprints keep it from being taken for the previous version
    path = save_base_policy(result, out)
    print(format_summary(result.metrics, path))
    if engine is not None:
        version = register_base_policy(path, result.metrics, engine=engine)
        print(f"  registered as policy version {version}")
    mark_finished(result, path)  # a later --resume does not train this run again
    return 0


def pretrain_preflight(cfg, out, *, register: bool):
    """Before any data or model work: an explicit --out holds no other kind of model; the output
    and checkpoint folders are writable with room for about twice what the run writes (the model,
    and a checkpoint of weights and Adam's two moments); the database accepts a write (unless
    --no-register). Returns the engine, or None."""
    from base_policy.pretrain import checkpoint_dir
    from common.paths import artifacts_root, base_policy_dir, check_output_folder, check_writable_dirs, weights_size

    target = out or base_policy_dir()
    if out is not None:
        check_output_folder(out, kind="policy", overwrite=True)  # stage 1 replaces its policy by design
    if cfg.init_from:
        model_mb = weights_size(cfg.init_from) / (1 << 20) or 600.0
    else:
        params = (cfg.vocab_size or 50257) * cfg.n_embd + cfg.n_ctx * cfg.n_embd + 12 * cfg.n_layer * cfg.n_embd**2
        model_mb = 4 * params / (1 << 20)
    copies = 1 + (3 if cfg.checkpoint_every else 0)
    check_writable_dirs(
        [target.parent, checkpoint_dir(), artifacts_root() / "cache"],
        need_mb=2 * copies * model_mb + 20,
        stage="pretraining",
    )
    if not register:
        return None
    import db
    from db.engine import check_writable

    engine = db.connect()
    check_writable(engine, stage="pretraining")
    return engine


def run_generate(argv: list[str]) -> int:
    from base_policy.generate import GenerateConfig, default_prompts, fill_queue, generate_completions
    from base_policy.loading import load_policy, resolve_policy
    from common.config import load_config

    args = generate_parser().parse_args(argv)
    setup_logging(args.verbose)
    overrides = list(args.overrides)
    for key in (
        "policy",
        "n",
        "completions_per_prompt",
        "prompts_per_batch",
        "max_new_tokens",
        "temperature",
        "top_k",
        "top_p",
        "seed",
        "prompt_file",
    ):
        value = getattr(args, key)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    cfg = load_config(GenerateConfig, "generate", args.config, overrides)
    from common.imdb import DataConfig

    data_cfg = load_config(DataConfig, "data", args.config)
    import math

    prompts = default_prompts(math.ceil(cfg.n / cfg.completions_per_prompt), cfg, data_cfg)
    if not prompts:
        raise UserError("no prompts to generate from.", "check the prompt file or the IMDB data settings.")
    spec = resolve_policy(cfg.policy)
    if args.print_only:
        model, tok = load_policy(spec)
        for row in generate_completions(model, tok, prompts, cfg)[: cfg.n]:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    import db
    from db.engine import check_writable

    engine = db.connect()
    check_writable(engine, stage="generate")  # before the model loads
    written = fill_queue(engine, spec, cfg.n, cfg, prompts=prompts)
    print(
        f"wrote {written} completions from {spec} to {db.__name__} ({engine.url.render_as_string(hide_password=True)})"
    )
    return 0


def usage() -> str:
    lines = ["usage: python -m base_policy {pretrain,generate} [options]", ""]
    lines += [f"  {name:<9} {text}" for name, text in COMMANDS.items()]
    lines += ["", "`python -m base_policy COMMAND --help` lists the options of one command."]
    return "\n".join(lines)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "pretrain":
        return run_pretrain(rest)
    if command == "generate":
        return run_generate(rest)
    if command == "ppo":
        raise UserError("ppo is not a stage-1 command.", "run `python -m rl_finetune ppo` (make finetune).")
    raise UserError(f"unknown command {command!r}.", "use one of: pretrain, generate (see --help).")


if __name__ == "__main__":
    sys.exit(main())
