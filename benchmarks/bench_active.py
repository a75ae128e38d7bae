"""Does "uncertain first" (the reward ensemble's disagreement) reach a held-out accuracy with fewer labels
than random order? Simulated labellers on the default policy's own text.

The texts, the gold judge and the simulated labellers are those of ``benchmarks/bench_labels.py`` (its
helpers are imported): each item's label is the majority of ``overlap`` simulated labellers (ties dropped)
judging the gold score, which follows the labelling guidelines. A fixed held-out set of items is never
labelled for training; every model is scored on it.

Active loop, once per order, both from the same first random batch:
  train the reward model (the IMDB seed model + ``run_human_phase`` with the profile's ``reward`` section,
  ``ensemble_size`` heads, from the seed weights each time) on the labels so far -> score the unlabelled
  pool -> label the next batch: the largest ensemble spread first (``uncertain``, what the queue does),
  with ``--orders``: ``mixed``, half the batch by largest spread and half at random, and ``margin``, the mean
  P(good) closest to 0.5 first; or a random one (``random``, always run) -> retrain at the next budget. The
  spread needs ``--set ensemble_size=3`` (or more); without it ``uncertain`` and ``mixed`` are refused.

Figures (one JSON line each):
- ``round``: order, labels, held-out accuracy with its 95% interval against the held-out (simulated,
  noisy) labels and against the gold judge's verdict on the same items (``gold_accuracy``), mean spread
  of the batch picked next;
- ``labels_to_accuracy``: for each accuracy target (the accuracies random order reached), the fewest
  labels each order needed to reach it (null = not within the budgets), and the accuracy difference
  of each order - random at each budget (95% paired bootstrap interval); the same against gold
  (``labels_needed_gold``, ``..._points_gold``);
- ``ensemble_cost`` (``--cost``): K heads on one encoder against K independent members (K seeds of the
  single-head model): human-phase training seconds, scoring seconds, and the mean spread on the held-out
  queue texts and on off-distribution texts (Rotten Tomatoes sentences, random word lists).

    flock /tmp/rlhf-cpu.lock python benchmarks/bench_active.py --db /tmp/h14/queue-cache.sqlite --set ensemble_size=3 --quick
    flock /tmp/rlhf-cpu.lock python benchmarks/bench_active.py --db /tmp/h14/queue-cache.sqlite --set ensemble_size=3 --orders uncertain margin
    flock /tmp/rlhf-cpu.lock python benchmarks/bench_active.py --db /tmp/h14/queue-cache.sqlite --cost --quick

The database comes from ``python -m base_policy generate`` (see bench_labels.py); the seed phase is cached
under ``$RLHF_ARTIFACTS/reward_seed`` (``--artifacts``, default ./artifacts).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

COMMAND = ""


def emit(figure: str, **values) -> None:
    print(
        json.dumps(
            {"figure": figure, **values, "command": COMMAND, "machine": f"{platform.machine()} x{os.cpu_count()}"},
            default=float,
        ),
        flush=True,
    )


def labels_to_accuracy(rows: list[dict], targets: list[float]) -> dict[str, dict[str, int | None]]:
    """For each order and target accuracy (points): the fewest labels at which it was reached, or None."""
    out: dict[str, dict[str, int | None]] = {}
    for order in sorted({r["order"] for r in rows}):
        mine = sorted((r for r in rows if r["order"] == order), key=lambda r: r["labels"])
        out[order] = {
            f"{t:.1f}": next((r["labels"] for r in mine if r["accuracy"] >= t), None) for t in sorted(set(targets))
        }
    return out


SPREAD_ORDERS = ("uncertain", "balanced", "mixed")  # the orders that need an ensemble's spread
ORDERS = (*SPREAD_ORDERS, "margin", "random")


def pick_next(
    order: str, pool: list, spread: np.ndarray | None, k: int, rng: np.random.Generator, mean: np.ndarray | None = None
) -> list[int]:
    """Indices into ``pool`` of the next ``k`` items to label: the largest ensemble spread first
    (``uncertain``, the queue's order), half of them so and half at random from the rest (``mixed``), the
    mean P(good) closest to 0.5 first (``margin``, what the queue does for items scored without a spread),
    the largest spread within each side of the mean's verdict, as many from each side as the pool's share of
    predicted good (``balanced``: the plain order's batches are lopsided, 21-72% good against the pool's 30%),
    or at random."""
    if order == "uncertain" and spread is not None:
        return [int(i) for i in np.argsort(-spread, kind="stable")[:k]]
    if order == "balanced" and spread is not None and mean is not None:
        good = mean >= 0.5
        n_good = min(int(round(k * float(good.mean()))), int(good.sum()))
        picks = []
        for side, n in ((good, n_good), (~good, k - n_good)):
            idx = np.flatnonzero(side)
            picks += [int(i) for i in idx[np.argsort(-spread[idx], kind="stable")[:n]]]
        return picks
    if order == "mixed" and spread is not None:
        top = [int(i) for i in np.argsort(-spread, kind="stable")[: k - k // 2]]
        rest = np.setdiff1d(np.arange(len(pool)), top)
        return top + [int(i) for i in rng.permutation(rest)[: k // 2]]
    if order == "margin" and mean is not None:
        return [int(i) for i in np.argsort(np.abs(mean - 0.5), kind="stable")[:k]]
    return [int(i) for i in rng.permutation(len(pool))[:k]]


def main() -> None:
    global COMMAND
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True, help="SQLite file (or URL) holding the policy's completions")
    ap.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="reward key")
    ap.add_argument("--heldout", type=int, default=600, help="held-out items (after ties are dropped)")
    ap.add_argument("--pool", type=int, default=2500, help="unlabelled items the orders choose from")
    ap.add_argument("--budgets", type=int, nargs="*", default=[100, 200, 400, 800], help="labels at each retraining")
    ap.add_argument(
        "--quick", action="store_true", help="under ~3 minutes: 500 held out, a 1,000-item pool, 100/200/300"
    )
    ap.add_argument(
        "--orders", nargs="+", choices=ORDERS, default=["uncertain", "random"], help="orders to compare with random"
    )
    ap.add_argument("--cost", action="store_true", help="instead: the ensemble_cost figure (heads vs members)")
    ap.add_argument("--artifacts", default=str(REPO / "artifacts"), help="RLHF_ARTIFACTS (seed and gold caches)")
    ap.add_argument("--split-seed", type=int, default=0)
    args = ap.parse_args()
    if args.quick:
        args.heldout, args.pool, args.budgets = min(args.heldout, 500), min(args.pool, 1000), [100, 200, 300]
    COMMAND = "python benchmarks/bench_active.py " + " ".join(sys.argv[1:])
    from bench_labels import accuracy_ci, offline_profile, queue_texts, simulated_labels

    cfg, data_cfg, scfg, gcfg = offline_profile(args)
    if not args.cost and set(SPREAD_ORDERS) & set(args.orders) and cfg.ensemble_size < 2:
        ap.error(
            f"{', '.join(map(repr, SPREAD_ORDERS))} need an ensemble's spread, and reward.ensemble_size is {cfg.ensemble_size}: "
            "add --set ensemble_size=3 (or drop it with --orders margin)"
        )
    from common.gold import GoldJudge
    from reward_training import data as D
    from reward_training.training import seed_phase

    url = args.db if "://" in args.db else f"sqlite:///{Path(args.db).resolve()}"

    # 1. texts, gold, simulated labels (looked up when an item is "labelled")
    items = queue_texts(url)
    judge = GoldJudge.load_or_fit(gcfg)
    gold = judge.score([t for _, t in items])
    records, counts = simulated_labels(items, gold, scfg)
    gold_by_group = {f"c:{cid}": float(g) > scfg.threshold for (cid, _), g in zip(items, gold)}
    human = D.human_examples(records)
    order = np.random.default_rng(args.split_seed).permutation(len(human))
    held = [human[i] for i in order[: args.heldout]]
    pool = [human[i] for i in order[args.heldout : args.heldout + args.pool]]

    # 2. the seed model (cached)
    seed_ex, _ = D.seed_and_eval_snippets(cfg, data_cfg)
    t0 = time.perf_counter()
    seed = seed_phase(cfg, data_cfg, seed_ex, progress=False)
    seed_state = {k: v.detach().clone() for k, v in seed.model.state_dict().items()}
    emit(
        "setup",
        **counts,
        usable=len(human),
        heldout=len(held),
        pool=len(pool),
        good_rate=round(float(np.mean([e.label for e in human])), 3),
        seed_phase_seconds=round(time.perf_counter() - t0, 1),
        seed_cached=bool(seed.info.get("cached")),
        ensemble_size=cfg.ensemble_size,
    )
    if args.cost:
        ensemble_cost(cfg, seed, seed_state, pool, held, seed_ex)
        return
    active_loop(cfg, args, seed, seed_state, pool, held, seed_ex, accuracy_ci, gold_by_group)


def train_from_seed(cfg, seed, seed_state, labelled, seed_ex):
    """The seed model's weights, then the human phase on ``labelled`` (validation part picks the epoch), with
    the ensemble of ``cfg`` (heads inside the phase, or the other members after it), as ``train()`` does."""
    import torch

    from reward_training.model import attach_members, load_backbone
    from reward_training.training import run_human_phase, train_members

    torch.manual_seed(cfg.random_seed)
    model, tok = load_backbone(cfg.backbone_or_default, freeze_embeddings=cfg.freeze_embeddings)
    model.load_state_dict(seed_state)
    res = run_human_phase(model, tok, cfg, labelled, seed_ex, progress=False)
    attach_members(model, train_members(cfg, seed_state, labelled, seed_ex, progress=False))
    return model, tok, res


def active_loop(cfg, args, seed, seed_state, pool, held, seed_ex, accuracy_ci, gold_by_group) -> None:
    from reward_training.evaluate import accuracy_difference
    from reward_training.model import predict_mean_spread

    kw = {"max_length": cfg.max_length, "batch_size": cfg.eval_batch_size, "bf16": cfg.bf16}
    y_held, t_held = [e.label for e in held], [e.text for e in held]
    g_held = [float(gold_by_group[e.group]) for e in held]  # the gold judge's verdict: no label noise
    budgets = sorted(set(args.budgets))
    first = [int(i) for i in np.random.default_rng(args.split_seed + 1).permutation(len(pool))[: budgets[0]]]
    rows, preds = [], {}
    orders = [o for o in ORDERS if o in set(args.orders) | {"random"}]
    for order in orders:
        rng = np.random.default_rng(args.split_seed + 2)
        chosen = list(first)
        for b_i, budget in enumerate(budgets):
            t0 = time.perf_counter()
            model, tok, res = train_from_seed(cfg, seed, seed_state, [pool[i] for i in chosen], seed_ex)
            train_s = time.perf_counter() - t0
            p_held, _ = predict_mean_spread(model, tok, t_held, **kw)
            preds[(order, budget)] = p_held
            row = {"order": order, "labels": len(chosen), **accuracy_ci(y_held, p_held)}
            row["gold_accuracy"] = accuracy_ci(g_held, p_held)
            row.update(train_seconds=round(train_s, 1), best_epoch=res.best_epoch if res else None)
            if b_i + 1 < len(budgets):  # score the rest of the pool and label the next batch
                rest = [i for i in range(len(pool)) if i not in set(chosen)]
                t1 = time.perf_counter()
                mean, spread = predict_mean_spread(model, tok, [pool[i].text for i in rest], **kw)
                pick = pick_next(order, rest, spread, budgets[b_i + 1] - len(chosen), rng, mean=mean)
                row.update(
                    score_seconds=round(time.perf_counter() - t1, 1),
                    next_batch_mean_spread=round(float(np.mean(spread[pick])), 4) if spread is not None else None,
                    pool_mean_spread=round(float(np.mean(spread)), 4) if spread is not None else None,
                    next_batch_good_rate=round(float(np.mean([pool[rest[i]].label for i in pick])), 3),
                )
                chosen += [rest[i] for i in pick]
            rows.append(row)
            emit("round", **row)
    targets = [r["accuracy"] for r in rows if r["order"] == "random"]
    gold_rows = [{**r, "accuracy": r["gold_accuracy"]["accuracy"]} for r in rows]
    gold_targets = [r["accuracy"] for r in gold_rows if r["order"] == "random"]
    diffs = {
        f"{order}_minus_random_points{suffix}": {
            str(b): accuracy_difference(y, preds[(order, b)], preds[("random", b)], seed=cfg.random_seed)
            for b in budgets
        }
        for order in orders
        if order != "random"
        for suffix, y in (("", y_held), ("_gold", g_held))
    }
    emit(
        "labels_to_accuracy",
        heldout=len(held),
        budgets=budgets,
        labels_needed=labels_to_accuracy(rows, targets),
        labels_needed_gold=labels_to_accuracy(gold_rows, gold_targets),
        **diffs,
        rows=rows,
    )


def ensemble_cost(cfg, seed, seed_state, pool, held, seed_ex, n_train: int = 300, k: int = 5) -> None:
    """K heads on one encoder vs K members, and one model: training and scoring seconds, and the spread on
    and off distribution."""
    from common.imdb import rotten_tomatoes_sentences
    from reward_training.model import predict_mean_spread

    kw = {"max_length": cfg.max_length, "batch_size": cfg.eval_batch_size, "bf16": cfg.bf16}
    labelled = pool[:n_train]
    rng = np.random.default_rng(0)
    rt = rotten_tomatoes_sentences()
    words = sorted({w for e in pool for w in e.text.split()})
    sets = {
        "queue_heldout": [e.text for e in held],
        "rotten_tomatoes": [rt[int(i)][0] for i in rng.permutation(len(rt))[: len(held)]],
        "random_words": [" ".join(rng.choice(words, 30)) for _ in range(len(held))],
    }
    out = {}
    for name, run_cfg in (
        ("single", dataclasses.replace(cfg, ensemble_size=1)),
        ("heads", dataclasses.replace(cfg, ensemble="heads", ensemble_size=k)),
        ("members", dataclasses.replace(cfg, ensemble="members", ensemble_size=k)),
    ):
        t0 = time.perf_counter()
        model, tok, _ = train_from_seed(run_cfg, seed, seed_state, labelled, seed_ex)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        spreads = {s: predict_mean_spread(model, tok, texts, **kw)[1] for s, texts in sets.items()}
        t_score = time.perf_counter() - t0
        out[name] = {
            "k": 1 if name == "single" else k,
            "train_seconds": round(t_train, 1),
            "score_seconds": round(t_score, 1),
            "texts_scored": sum(len(t) for t in sets.values()),
            "spread_mean": {s: round(float(v.mean()), 4) for s, v in spreads.items() if v is not None},
            "spread_median": {s: round(float(np.median(v)), 4) for s, v in spreads.items() if v is not None},
        }
        emit("ensemble_cost_part", method=name, **out[name])
    emit("ensemble_cost", train_labels=n_train, **out)


if __name__ == "__main__":
    main()
