"""``python -m rl_finetune analyse BASE TUNED [--out DIR] [--prompts FILE]``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from common.errors import UserError, cli_entry, setup_logging
from common.paths import artifacts_root

log = logging.getLogger(__name__)

#: config.json keys two folders must share to be compared layer by layer.
SHAPE_KEYS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "n_embd",
    "num_hidden_layers",
    "n_layer",
    "num_attention_heads",
    "n_head",
    "num_key_value_heads",
    "intermediate_size",
    "n_inner",
    "head_dim",
)
FAMILIES = ("gpt2", "llama", "mistral", "qwen2")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rl_finetune analyse",
        description="What RL fine-tuning changed inside a causal LM: behaviour, next-token shift, logit lens, "
        "direct logit attribution per layer and head, activation patching and weight change, as a markdown report.",
    )
    p.add_argument("base", type=Path, help="the starting policy folder")
    p.add_argument("tuned", type=Path, help="the fine-tuned policy folder (same family, architecture and vocabulary)")
    p.add_argument(
        "--out", type=Path, default=None, help="report folder (default: $RLHF_ARTIFACTS/analysis/<tuned>-vs-<base>)"
    )
    p.add_argument(
        "--prompts",
        type=Path,
        default=None,
        help="prompts for the statistics, one per line (default: IMDB test openings)",
    )
    p.add_argument("-n", "--n-prompts", type=int, default=32, help="how many prompts for the statistics (0 = none)")
    p.add_argument(
        "--probe", action="append", default=None, help="a probe prompt (repeatable; default: five review openings)"
    )
    p.add_argument("--positive", default=" good", help="comma-separated single-token positive words (default ' good')")
    p.add_argument("--negative", default=" bad", help="comma-separated single-token negative words (default ' bad')")
    p.add_argument(
        "--reward",
        type=Path,
        default=None,
        help="reward model folder for its token attribution (default: the latest under $RLHF_ARTIFACTS/reward_models, "
        "if any)",
    )
    p.add_argument("--no-reward", action="store_true", help="leave the reward model's token attribution out")
    p.add_argument("--samples", type=int, default=3, help="sampled continuations per probe and model")
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def read_config(folder: Path, role: str) -> dict:
    if not folder.exists():
        raise UserError(
            f"the {role} folder {str(folder)!r} does not exist.", "pass a model folder written by save_pretrained."
        )
    cfg_path = folder / "config.json"
    if not folder.is_dir() or not cfg_path.is_file():
        raise UserError(
            f"the {role} folder {str(folder)!r} is not a saved model (no config.json).",
            "pass a model folder written by save_pretrained.",
        )
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{str(cfg_path)!r} is not valid JSON.", "re-save the model with save_pretrained.") from None
    arch = cfg.get("architectures") or []
    if arch and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in arch):
        raise UserError(
            f"the {role} folder {str(folder)!r} holds a {arch[0]}, not a causal language model.",
            "pass two policy folders (causal LMs with their LM head, as base_policy and PPO save them), not a "
            "reward model or a bare trunk.",
        )
    if cfg.get("model_type") not in FAMILIES:
        raise UserError(
            f"the {role} folder {str(folder)!r} is a {cfg.get('model_type')!r} model; the analysis knows "
            f"{', '.join(FAMILIES)}.",
            "compare two GPT-2 or two Llama-family policies.",
        )
    return cfg


def check_pair(base: Path, tuned: Path) -> None:
    """Refuse two folders that cannot be compared layer by layer, before any weights load."""
    cb, ct = read_config(base, "base"), read_config(tuned, "tuned")
    diff = [f"{k} {cb.get(k)!r} vs {ct.get(k)!r}" for k in SHAPE_KEYS if cb.get(k) != ct.get(k)]
    if diff:
        raise UserError(
            f"{str(base)!r} and {str(tuned)!r} are different architectures ({'; '.join(diff)}).",
            "compare a tuned policy with the policy it was trained from (same family, size and vocabulary).",
        )


def check_vocab(tok_b, tok_t, base: Path, tuned: Path) -> None:
    if tok_b.get_vocab() != tok_t.get_vocab():
        raise UserError(
            f"{str(base)!r} and {str(tuned)!r} have different vocabularies ({len(tok_b)} vs {len(tok_t)} tokens).",
            "compare a tuned policy with the policy it was trained from (same tokenizer).",
        )


def default_out(base: Path, tuned: Path) -> Path:
    name = lambda p: p.resolve().name or "model"  # noqa: E731
    return artifacts_root() / "analysis" / f"{name(tuned)}-vs-{name(base)}"


def reward_folder(args) -> Path | None:
    """The reward model of the token attribution: ``--reward``, else the latest one, else None (a
    missing or foreign folder is refused here, before the policies load)."""
    if args.no_reward:
        return None
    if args.reward is None:
        from common.paths import resolve_latest, reward_models_dir

        found = resolve_latest(reward_models_dir())
        if found is None:
            log.info("no reward model under %s: the report leaves its token attribution out", reward_models_dir())
            return None
        args.reward = found
    from reward_training import load_reward_fn

    return Path(load_reward_fn(args.reward, kind="logit_diff", bf16=False).model_dir)


def stats_prompts(args) -> list[str]:
    if args.n_prompts < 0:
        raise UserError(f"--n-prompts {args.n_prompts} is negative.", "pass 0 for no statistics, or e.g. 32.")
    if args.n_prompts == 0:
        return []
    if args.prompts is not None:
        from common.imdb import read_prompt_file

        return read_prompt_file(args.prompts)[: args.n_prompts]
    from common.imdb import DataConfig, imdb_texts, make_prompts

    cfg = DataConfig()
    return make_prompts(imdb_texts(cfg)["test"], args.n_prompts, cfg, seed=cfg.seed + 17)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    check_pair(args.base, args.tuned)
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from base_policy.loading import load_policy
    from rl_finetune.analysis.report import PROBES, analyse, encode, token_ids

    hf_logging.disable_progress_bar()
    try:
        tok_b, tok_t = AutoTokenizer.from_pretrained(args.base), AutoTokenizer.from_pretrained(args.tuned)
    except (OSError, ValueError) as err:
        raise UserError(
            f"could not load a tokenizer ({str(err).strip()[:200]}).",
            "save the tokenizer beside each model (tokenizer.save_pretrained(folder)).",
        ) from None
    check_vocab(tok_b, tok_t, args.base, args.tuned)
    words = lambda s: [w for w in s.split(",") if w.strip()]  # noqa: E731
    positive, negative = words(args.positive), words(args.negative)
    token_ids(tok_b, positive, "positive"), token_ids(tok_b, negative, "negative")  # refuse before the weights load
    for probe in args.probe or PROBES:
        encode(tok_b, probe)
    prompts = stats_prompts(args)
    for prompt in prompts:
        encode(tok_b, prompt)
    reward = reward_folder(args)
    out = args.out or default_out(args.base, args.tuned)
    base, tok = load_policy(str(args.base))
    tuned, _ = load_policy(str(args.tuned))
    res = analyse(
        base,
        tuned,
        tok,
        out,
        names=(str(args.base), str(args.tuned)),
        probes=args.probe,
        prompts=prompts,
        positive=positive,
        negative=negative,
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        reward=reward,
    )
    print("\n".join(res["headline"]))
    print(f"report: {out / 'report.md'}")
    return 0
