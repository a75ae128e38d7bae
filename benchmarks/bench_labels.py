"""Do human labels teach the reward model what the IMDB seed cannot? Simulated labellers on SmolLM2 text.

The texts are the default policy's own completions (prompt + completion, ``db.shown_text``) from a
feedback database; the labels come from the demo's simulated labellers (``demo.simulate`` of the
profile: each item judged by ``overlap`` of them, with their own noise and bias, combined by majority
with ties dropped, as ``db.labelled_dataset`` does) judging by the gold judge, which follows the
labelling guidelines (positive x about the film x fluent English). A fixed ``--heldout`` set of items
is never trained on; every model is scored on it.

Figures (one JSON line each):
- ``gold_factors``: the gold judge's on-topic and fluency factors on the SmolLM2 texts, on real IMDB
  review snippets of the same shape (IMDB test split) and on Rotten Tomatoes sentences;
- ``labels``: how many items and labels, the good rate, how often gold and plain sentiment disagree;
- ``heldout_accuracy``: at the largest size, accuracy with a 95% interval for seed-only (the IMDB
  seed model, no human labels), seed + human (``reward_training.training.human_phase`` with the
  profile's settings), unseeded (the bare backbone on the human labels) and TF-IDF (on the seed
  snippets + the human labels, as ``train()`` fits it, and on the human labels alone), and the
  paired differences seed+human minus seed-only / minus TF-IDF with 95% bootstrap intervals;
- ``learning_curve``: held-out accuracy at each ``--sizes`` for seeded, unseeded and both TF-IDFs.

Get texts once (about 8 minutes for 4,500 on 2 cores), then reuse the database::

    RLHF_ARTIFACTS=$PWD/artifacts RLHF_DB_URL=sqlite:////tmp/queue.sqlite \\
        flock /tmp/rlhf-cpu.lock python -m base_policy generate --policy artifacts/smollm2-135m -n 4500 --seed 1
    flock /tmp/rlhf-cpu.lock python benchmarks/bench_labels.py --db /tmp/queue.sqlite --sizes 100 300 1000 3000

``--methods`` and ``--sizes`` split the work into shorter runs; the seed phase is cached under
``$RLHF_ARTIFACTS/reward_seed`` (``--artifacts``, default ./artifacts).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

METHODS = ("seed-only", "seeded", "unseeded", "tfidf-seeded", "tfidf-human")


def emit(figure: str, **values) -> None:
    print(json.dumps({"figure": figure, **values, "command": COMMAND}, default=float), flush=True)


COMMAND = ""


def offline_profile(args):
    """The reward benchmarks' common start: log warnings to stderr, ``RLHF_ARTIFACTS`` from ``--artifacts``,
    the offline environment, then the profile's ``reward`` (with ``--set`` overrides), ``data`` and
    simulated-labeller sections. Returns ``(reward_cfg, data_cfg, simulate_cfg, gold_cfg)``."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ["RLHF_ARTIFACTS"] = args.artifacts
    from common.assets import offline_env

    offline_env()
    from common.config import load_config
    from common.imdb import DataConfig
    from labeling_app.simulate import load_simulate_config
    from reward_training.config import RewardConfig

    cfg = load_config(RewardConfig, "reward", profile=args.config, overrides=args.overrides)
    data_cfg = load_config(DataConfig, "data", profile=args.config)
    return (cfg, data_cfg, *load_simulate_config(args.config))


def queue_texts(db_url: str) -> list[tuple[int, str]]:
    """(completion id, prompt + completion) of every completion in the (unlabelled) queue database."""
    import db

    items = db.unlabelled_completions(db.connect(db_url))
    return [(it.completion_id, db.shown_text(it.prompt, it.completion)) for it in items]


def simulated_labels(items, scores: np.ndarray, scfg) -> tuple[list[dict], dict]:
    """Majority labels (ties dropped) of ``scfg.overlap`` labellers per item, taking turns round robin,
    each deciding like ``labeling_app.simulate.decide`` (its noise, bias and skip rate)."""
    from labeling_app.simulate import decide, decision_rng

    specs = list(scfg.labelers)
    k = min(scfg.overlap, len(specs))
    records, n_labels, ties, turn = [], 0, 0, 0
    for (cid, text), p in zip(items, scores):
        good = bad = 0
        for j in range(k):
            spec = specs[(turn + j) % len(specs)]
            label = decide(float(p), spec, decision_rng(scfg.seed, spec.name, cid), scfg.threshold)
            n_labels += 1
            good += label == "good"
            bad += label == "bad"
        turn += 1
        if good == bad:
            ties += 1
            continue
        records.append({"completion_id": cid, "text": text, "label": float(good > bad)})
    return records, {"labels": n_labels, "items": len(items), "ties_dropped": ties}


def accuracy_ci(y, p, reps: int = 2000, seed: int = 0) -> dict:
    y = np.asarray(y) > 0.5
    hit = ((np.asarray(p) > 0.5) == y).astype(float)
    rng = np.random.default_rng(seed)
    boot = hit[rng.integers(0, len(hit), size=(reps, len(hit)))].mean(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"accuracy": round(100 * hit.mean(), 2), "ci95": [round(100 * lo, 2), round(100 * hi, 2)], "n": len(hit)}


def main() -> None:
    global COMMAND
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True, help="SQLite file (or URL) holding the policy's completions")
    ap.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="reward key")
    ap.add_argument("--heldout", type=int, default=600, help="held-out items (after ties are dropped)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[100, 300, 1000, 3000], help="training label counts")
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    ap.add_argument("--artifacts", default=str(REPO / "artifacts"), help="RLHF_ARTIFACTS (seed and gold caches)")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--gold-only", action="store_true", help="stop after the gold and label figures")
    ap.add_argument(
        "--demo-labels",
        type=int,
        default=None,
        help="instead: the demo's own path on N labels: ceil(N / overlap) of the completions copied into a fresh "
        "database, labelled by labeling_app.simulate.simulate through db, then `python -m reward_training`'s "
        "train() with the profile's reward section (figure demo_path)",
    )
    ap.add_argument(
        "--diagnose",
        action="store_true",
        help="evaluate on the held-out set after every epoch and print the curve (then the held-out set also picks "
        "the epoch, so the accuracies are optimistic: for finding out what training does, not for reporting)",
    )
    args = ap.parse_args()
    COMMAND = "python benchmarks/bench_labels.py " + " ".join(sys.argv[1:])
    cfg, data_cfg, scfg, gcfg = offline_profile(args)
    import torch

    from common.gold import GoldJudge
    from common.imdb import load_imdb, rotten_tomatoes_sentences
    from reward_training import data as D
    from reward_training.evaluate import TfidfBaseline, accuracy_difference
    from reward_training.model import load_backbone, predict_proba
    from reward_training.training import human_phase, run_human_phase, seed_phase

    url = args.db if "://" in args.db else f"sqlite:///{Path(args.db).resolve()}"

    # 1. texts, gold, labels
    items = queue_texts(url)
    if args.demo_labels:
        demo_path(url, args.demo_labels, cfg, data_cfg, scfg, gcfg)
        return
    judge = GoldJudge.load_or_fit(gcfg)
    parts = judge.parts([t for _, t in items])
    test = load_imdb(data_cfg)["test"]
    real = D.imdb_snippets(
        test["text"],
        test["label"],
        2000,
        prompt_words=(data_cfg.prompt_min_words, data_cfg.prompt_max_words),
        span_words=(cfg.span_min_words, cfg.span_max_words),
        follow_fraction=1.0,
        seed=5,
    )
    rt_all = rotten_tomatoes_sentences()
    rt = [rt_all[int(i)][0] for i in np.random.default_rng(5).permutation(len(rt_all))[:2000]]

    def factors(p: dict) -> dict:
        f = p["on_topic"] * p["fluency"]
        return {
            "n": len(f),
            "factor_mean": round(float(f.mean()), 3),
            "factor_below_0.5": round(float((f < 0.5).mean()), 3),
            "on_topic_mean": round(float(p["on_topic"].mean()), 3),
            "on_topic_below_0.5": round(float((p["on_topic"] < 0.5).mean()), 3),
            "fluency_mean": round(float(p["fluency"].mean()), 3),
            "fluency_below_0.5": round(float((p["fluency"] < 0.5).mean()), 3),
        }

    emit(
        "gold_factors",
        smollm2_queue=factors(parts),
        real_imdb_snippets=factors(judge.parts([e.text for e in real])),
        rotten_tomatoes=factors(judge.parts(rt)),
        sentiment_positive_but_gold_bad=round(float(((parts["sentiment"] > 0.5) & (parts["score"] <= 0.5)).mean()), 3),
    )
    records, counts = simulated_labels(items, parts["score"], scfg)
    human = D.human_examples(records)
    rng = np.random.default_rng(args.split_seed)
    order = rng.permutation(len(human))
    held = [human[i] for i in order[: args.heldout]]
    pool = [human[i] for i in order[args.heldout :]]
    y_held = [e.label for e in held]
    t_held = [e.text for e in held]
    emit(
        "labels",
        **counts,
        usable=len(human),
        heldout=len(held),
        train_pool=len(pool),
        good_rate=round(float(np.mean([e.label for e in human])), 3),
        labellers=[{"name": s.name, "noise": s.noise, "bias": s.bias} for s in scfg.labelers],
        overlap=scfg.overlap,
    )

    if args.gold_only:
        return

    # 2. models
    seed_ex, _ = D.seed_and_eval_snippets(cfg, data_cfg)
    t0 = time.perf_counter()
    seed = seed_phase(cfg, data_cfg, seed_ex, progress=False)
    seed_state = {k: v.detach().clone() for k, v in seed.model.state_dict().items()}
    seed_seconds = round(time.perf_counter() - t0, 1)

    def score(model, tok) -> np.ndarray:
        return predict_proba(
            model, tok, t_held, max_length=cfg.max_length, batch_size=cfg.eval_batch_size, bf16=cfg.bf16
        )

    preds: dict[tuple[str, int], np.ndarray] = {}
    rows = []
    if "seed-only" in args.methods:
        preds[("seed-only", 0)] = score(seed.model, seed.tok)
        rows.append({"method": "seed-only", "n_labels": 0, **accuracy_ci(y_held, preds[("seed-only", 0)])})
    sizes = sorted({min(n, len(pool)) for n in args.sizes})
    for n in sizes:
        sub = pool[:n]
        for method in ("seeded", "unseeded"):
            if method not in args.methods:
                continue
            torch.manual_seed(cfg.random_seed)
            model, tok = load_backbone(cfg.backbone_or_default, freeze_embeddings=cfg.freeze_embeddings)
            if method == "seeded":
                model.load_state_dict(seed_state)
            t1 = time.perf_counter()
            mix = None if method == "seeded" else 0.0
            if args.diagnose:  # every epoch scored on the held-out set, which then also picks the epoch
                res = human_phase(model, tok, cfg, sub, held, seed_ex, mix_ratio=mix, progress=False)
            else:  # exactly what `python -m reward_training` does: a validation part of `sub` picks the epoch
                res = run_human_phase(model, tok, cfg, sub, seed_ex, mix_ratio=mix, progress=False)
            preds[(method, n)] = score(model, tok)
            rows.append(
                {
                    "method": method,
                    "n_labels": n,
                    **accuracy_ci(y_held, preds[(method, n)]),
                    "train_seconds": round(time.perf_counter() - t1, 1),
                    "best_epoch": res.best_epoch,
                    "epochs": len(res.evals) - 1 if res.evals else None,
                    "validation": res.validation,
                    **({"evals": res.evals} if args.diagnose else {}),
                }
            )
            emit("progress", **rows[-1])
        for method, extra in (("tfidf-seeded", list(seed_ex)), ("tfidf-human", [])):
            if method not in args.methods:
                continue
            base = extra + list(sub)
            p = TfidfBaseline(seed=cfg.random_seed).fit([e.text for e in base], [e.label for e in base])
            preds[(method, n)] = p.predict_proba(t_held)
            rows.append({"method": method, "n_labels": n, **accuracy_ci(y_held, preds[(method, n)])})
    emit("learning_curve", heldout=len(held), seed_phase_seconds=seed_seconds, rows=rows)

    top = sizes[-1] if sizes else 0
    diffs = {}
    if ("seeded", top) in preds:
        for other in (("seed-only", 0), ("tfidf-seeded", top), ("tfidf-human", top), ("unseeded", top)):
            if other in preds:
                diffs[f"seeded_minus_{other[0]}"] = accuracy_difference(
                    y_held, preds[("seeded", top)], preds[other], seed=cfg.random_seed
                )
    emit(
        "heldout_accuracy",
        n_labels=top,
        rows=[r for r in rows if r["n_labels"] in (0, top)],
        differences_in_points=diffs,
        reward_config={k: getattr(cfg, k) for k in ("human_lr", "human_epochs", "mix_seed_ratio", "patience")},
    )


def demo_path(url: str, n_labels: int, cfg, data_cfg, scfg, gcfg) -> None:
    """What the demo does with ``n_labels``: fill a fresh queue, simulate the labellers through ``db``, train."""
    import dataclasses
    import math
    import tempfile

    import db
    from common.gold import GoldJudge
    from labeling_app.simulate import simulate
    from reward_training.training import train

    n_items = math.ceil(n_labels / scfg.overlap)
    rows = [(it.prompt, it.completion) for it in db.unlabelled_completions(db.connect(url), limit=n_items)]
    folder = Path(tempfile.mkdtemp(prefix="bench-labels-demo-"))
    shared = Path(os.environ["RLHF_ARTIFACTS"]).resolve()  # reuse its seed and gold caches, write nothing there
    (folder / "artifacts").mkdir()
    for cache in ("reward_seed", "gold"):
        if (shared / cache).is_dir():
            (folder / "artifacts" / cache).symlink_to(shared / cache)
    os.environ["RLHF_ARTIFACTS"] = str(folder / "artifacts")
    engine = db.connect(f"sqlite:///{folder / 'feedback.sqlite'}")
    db.add_completions(
        engine, [db.NewCompletion(prompt=p, text=t, model_version_id=None, gen_params={}) for p, t in rows]
    )
    judge = GoldJudge.load_or_fit(gcfg)
    t0 = time.perf_counter()
    sim = simulate(engine, dataclasses.replace(scfg, n_labels=n_labels), judge.score, progress=False)
    sim_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = train(cfg, engine, data_cfg=data_cfg, run_id="bench-labels-demo", register=False, progress=False)
    m = json.loads((out / "metrics.json").read_text())
    pick = ("accuracy", "roc_auc", "log_loss", "n")
    emit(
        "demo_path",
        completions=len(rows),
        labels=sim.n_recorded,
        simulate_seconds=round(sim_seconds, 1),
        train_seconds=round(time.perf_counter() - t0, 1),
        counts={k: m["counts"][k] for k in ("human_total", "human_train", "human_heldout")},
        validation=(m["human_phase"] or {}).get("validation"),
        best_epoch=(m["human_phase"] or {}).get("best_epoch"),
        human_phase_seconds=(m["human_phase"] or {}).get("seconds"),
        seed_model={k: m["seed_model"]["human_heldout"].get(k) for k in pick},
        model={k: m["model"]["human_heldout"].get(k) for k in pick},
        tfidf={k: m["tfidf"]["human_heldout"].get(k) for k in pick},
        model_minus_seed=m["model_minus_seed"].get("human_heldout"),
        model_minus_tfidf=m["model_minus_tfidf"].get("human_heldout"),
        imdb_snippets={
            "model": m["model"]["imdb_snippets"]["accuracy"],
            "tfidf": m["tfidf"]["imdb_snippets"]["accuracy"],
        },
    )


if __name__ == "__main__":
    main()
