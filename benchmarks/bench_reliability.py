"""Does weighting labellers by their estimated reliability beat majority vote? Issue 14, part 4.

Three simulated labellers (``labeling_app.simulate``: the gold judge of the labelling guidelines, each
with its own flip rate; defaults 5%, 10% (``--noises``) and ``--noisy`` 35%, no bias, no skips) each judge
every one of ``--labels`` items (overlap = the number of labellers), through the same ``db`` functions the
app uses, in a fresh temporary database holding only those items (the queue hands out the least-labelled
items first, so in the whole queue 3 x N labels would land on 3 x N items once each). The texts are the policy's completions
(prompt + completion, ``db.shown_text``) in ``--db``, which is only read, from a temporary copy.

The reward model is trained twice from the same IMDB seed weights with the profile's ``reward`` section
(``run_human_phase`` and the ensemble, as ``train()`` does; ``benchmarks/bench_active.py``'s
``train_from_seed``): once on ``combine: majority`` (ties dropped) and once on ``combine: reliability``
(the Dawid-Skene posterior P(good) as a soft label), both read back from the database by
``reward_training.data.load_human_examples``. A fixed set of ``--heldout`` other items is never labelled:
each model is scored there against the gold judge itself (gold score > threshold).

Figures (one JSON line each):
- ``setup``: counts (completions, held out, labelled items, judgements per labeller), the labellers,
  the gold good rates, seconds per step;
- ``reliability``: per labeller, the estimated accuracy (and sensitivity, specificity) beside the true
  1 - noise and the share of its answers that agree with gold;
- ``label_quality``: on the labelled items, how often the majority label and the posterior (> 0.5) agree
  with gold, and their Brier score against it: the label noise each way leaves in the training targets;
- ``repeat`` (with ``--repeats`` > 1): each labeller seed's accuracies and difference;
- ``heldout_accuracy``: held-out gold accuracy with a 95% interval of the seed-only model, majority and
  reliability, and the paired difference reliability - majority with its 95% bootstrap interval (over
  held-out items; with several repeats, each item's difference is first averaged over the repeats).

    RLHF_ARTIFACTS=$PWD/artifacts flock /tmp/rlhf-cpu.lock \\
        python benchmarks/bench_reliability.py --db /tmp/h14/queue.sqlite --heldout 600 --labels 1000

``--quick`` is a smaller run (300 held out, 400 labelled items). The seed phase and the gold judge are
cached under ``$RLHF_ARTIFACTS`` (``--artifacts``); make the database as ``bench_labels.py`` says.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from common.errors import UserError, cli_entry  # noqa: E402


def emit(figure: str, command: str, **values) -> None:
    print(
        json.dumps(
            {"figure": figure, **values, "command": command, "machine": f"{platform.machine()} x{os.cpu_count()}"},
            default=float,
        ),
        flush=True,
    )


def labeller_specs(noises: Sequence[float], noisy: float) -> list:
    """The careful labellers (``noises``) and the noisy one, unbiased and never skipping."""
    from labeling_app.simulate import LabelerSpec

    names = ["sim-ann", "sim-ben", "sim-cat", "sim-dan"]
    if len(noises) > len(names):
        raise UserError(f"--noises gives {len(noises)} labellers.", f"give at most {len(names)} (default 0.05 0.10).")
    specs = [LabelerSpec(name, noise=float(x)) for name, x in zip(names, noises)]
    return [*specs, LabelerSpec("sim-noisy", noise=float(noisy))]


def source_items(source: str, folder: Path) -> list:
    """The unlabelled completions (``db.Item``) of ``source`` (a SQLite file or sqlite:/// URL), read from a
    copy in ``folder`` so that nothing, not even a schema upgrade, touches the original."""
    import db

    path = Path(source.split("sqlite:///", 1)[1]) if source.startswith("sqlite:///") else Path(source)
    if ("://" in source and not source.startswith("sqlite:///")) or not path.is_file():
        raise UserError(
            f"--db {source!r} is not a SQLite database file.",
            "pass the file made by `python -m base_policy generate` (see benchmarks/bench_labels.py).",
        )
    copy = folder / "source.sqlite"
    shutil.copyfile(path, copy)
    for side in ("-wal",):  # committed pages not yet checkpointed into the main file
        if Path(f"{path}{side}").is_file():
            shutil.copyfile(f"{path}{side}", f"{copy}{side}")
    engine = db.connect(f"sqlite:///{copy}")
    try:
        items = db.unlabelled_completions(engine)
    finally:
        engine.dispose()
    if not items:
        raise UserError(
            f"{source} holds no unlabelled completions.",
            "fill it with the policy's text first: RLHF_DB_URL=sqlite:///FILE python -m base_policy generate -n 4500.",
        )
    return items


def split_items(items: Sequence, heldout: int, labels: int, seed: int) -> tuple[list, list]:
    """(held-out, to label): disjoint random sets of ``heldout`` and ``labels`` items."""
    if heldout < 10 or labels < 20:
        raise UserError(
            f"--heldout {heldout} / --labels {labels} are too few.", "use e.g. --heldout 600 --labels 1000."
        )
    if heldout + labels > len(items):
        raise UserError(
            f"the database has {len(items)} unlabelled completions; --heldout {heldout} + --labels {labels} "
            f"need {heldout + labels}.",
            "lower --heldout or --labels, or generate more completions.",
        )
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in order[:heldout]], [items[i] for i in order[heldout : heldout + labels]]


def judge_items(items: Sequence, sim_cfg, gold: dict[str, float], path: Path):
    """Store ``items`` in a fresh database at ``path`` and let the simulated labellers judge them all through
    ``db`` (``labeling_app.simulate.simulate``); returns (engine, result, gold score per new completion id)."""
    import db
    from labeling_app.simulate import simulate

    engine = db.connect(f"sqlite:///{path}")
    ids = db.add_completions(
        engine, [db.NewCompletion(prompt=it.prompt, text=it.completion, gen_params={}) for it in items]
    )
    by_id = {cid: gold[db.shown_text(it.prompt, it.completion)] for cid, it in zip(ids, items)}

    def score(texts: list[str]) -> np.ndarray:  # the gold judge, scored once for every text beforehand
        return np.array([gold[t] for t in texts])

    result = simulate(engine, sim_cfg, score, progress=False)
    return engine, result, by_id


def reliability_rows(rel, specs: Sequence, agreement: dict[str, float]) -> list[dict]:
    """Per labeller: Dawid-Skene's estimates beside the truth (1 - noise) and the share agreeing with gold."""

    def r4(x):
        return None if x is None else round(float(x), 4)

    rows = []
    for s in specs:
        est = rel.labellers.get(s.name)
        rows.append(
            {
                "labeller": s.name,
                "noise": s.noise,
                "true_accuracy": round(1 - s.noise, 4),
                "estimated_accuracy": r4(est and est.accuracy),
                "sensitivity": r4(est and est.sensitivity),
                "specificity": r4(est and est.specificity),
                "gold_agreement": agreement.get(s.name),
                "n_labels": est.n_labels if est else 0,
                "n_shared": est.n_shared if est else 0,
            }
        )
    return rows


def gold_agreement(examples: Sequence, gold_by_id: dict[int, float], threshold: float) -> dict:
    """How often the examples' labels (> 0.5) agree with gold, and their Brier score against it."""
    y = np.array([gold_by_id[int(e.group.split(":", 1)[1])] > threshold for e in examples], dtype=float)
    p = np.array([e.label for e in examples], dtype=float)
    decided = p != 0.5
    return {
        "n": len(examples),
        "agree_with_gold": round(float(((p > 0.5) == (y > 0.5))[decided].mean()), 4) if decided.any() else None,
        "brier_vs_gold": round(float(np.mean((p - y) ** 2)), 4) if len(p) else None,
        "undecided": int((~decided).sum()),
    }


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python benchmarks/bench_reliability.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--db", required=True, help="SQLite file holding the policy's completions (only read, from a copy)")
    ap.add_argument("--config", default=str(REPO / "configs" / "default.yaml"), help="profile")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="reward key")
    ap.add_argument("--heldout", type=int, default=600, help="items scored against gold, never labelled")
    ap.add_argument("--labels", type=int, default=1000, help="items labelled by all three labellers and trained on")
    ap.add_argument("--noises", type=float, nargs="+", default=[0.05, 0.10], help="the careful labellers' flip rates")
    ap.add_argument("--noisy", type=float, default=0.35, help="the noisy labeller's flip rate")
    ap.add_argument("--repeats", type=int, default=1, help="labeller seeds (simulate.seed + 0, 1, ...), pooled")
    ap.add_argument("--quick", action="store_true", help="a smaller run: at most 300 held out and 400 labelled")
    ap.add_argument(
        "--artifacts",
        default=os.environ.get("RLHF_ARTIFACTS", str(REPO / "artifacts")),
        help="RLHF_ARTIFACTS (the seed and gold caches; default $RLHF_ARTIFACTS, else ./artifacts)",
    )
    ap.add_argument("--split-seed", type=int, default=0, help="which items are held out and which labelled")
    return ap


@cli_entry
def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    if args.quick:
        args.heldout, args.labels = min(args.heldout, 300), min(args.labels, 400)
    if args.repeats < 1:
        raise UserError(f"--repeats {args.repeats} must be at least 1.", "use 1 (or 3 to average labeller noise).")
    command = "python benchmarks/bench_reliability.py " + " ".join(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ["RLHF_ARTIFACTS"] = args.artifacts
    from common.assets import offline_env

    offline_env()
    import db
    from common.config import load_config
    from common.gold import GoldJudge
    from common.imdb import DataConfig
    from labeling_app.simulate import load_simulate_config
    from reward_training import data as D
    from reward_training.config import RewardConfig
    from reward_training.reliability import dawid_skene

    cfg = load_config(RewardConfig, "reward", profile=args.config, overrides=args.overrides)
    data_cfg = load_config(DataConfig, "data", profile=args.config)
    scfg, gcfg = load_simulate_config(args.config)
    specs = labeller_specs(args.noises, args.noisy)
    sim_cfgs = [
        dataclasses.replace(
            scfg,
            labelers=specs,
            overlap=len(specs),
            n_labels=len(specs) * args.labels,
            order="random",
            seed=scfg.seed + r,
        )
        for r in range(args.repeats)
    ]
    for s in sim_cfgs:
        s.validate()

    with tempfile.TemporaryDirectory(prefix="bench-reliability-") as tmp:
        # 1. texts: held-out and to-label items, their gold scores
        items = source_items(args.db, Path(tmp))
        held_items, to_label = split_items(items, args.heldout, args.labels, args.split_seed)
        t0 = time.perf_counter()
        judge = GoldJudge.load_or_fit(gcfg)
        texts = [db.shown_text(it.prompt, it.completion) for it in held_items + to_label]
        gold = dict(zip(texts, (float(x) for x in judge.score(texts))))
        gold_seconds = time.perf_counter() - t0
        t_held = texts[: len(held_items)]
        y_held = np.array([gold[t] > scfg.threshold for t in t_held], dtype=float)

        # 2. labels: all three labellers on every item, read back as majority and as reliability labels
        runs = []
        for r, sim_cfg in enumerate(sim_cfgs):
            t0 = time.perf_counter()
            engine, sim, gold_by_id = judge_items(to_label, sim_cfg, gold, Path(tmp) / f"labels-{r}.sqlite")
            try:
                rel = dawid_skene((j["completion_id"], j["labeler"], j["label"]) for j in db.judgement_rows(engine))
                sets = {c: D.load_human_examples(engine, c) for c in ("majority", "reliability")}
            finally:
                engine.dispose()
            for exs in sets.values():
                D.check_two_classes(exs)
            runs.append({"sim": sim, "rel": rel, "sets": sets, "gold_by_id": gold_by_id})
            runs[-1]["seconds"] = time.perf_counter() - t0

    first = runs[0]
    emit(
        "setup",
        command,
        completions=len(items),
        heldout=len(held_items),
        labelled_items=len(to_label),
        judgements=first["sim"].n_recorded,
        per_labeller=first["sim"].per_labeler,
        label_counts=first["sim"].label_counts,
        overlap=len(specs),
        repeats=args.repeats,
        labellers=[{"name": s.name, "noise": s.noise, "bias": s.bias} for s in specs],
        majority_items=len(first["sets"]["majority"]),
        reliability_items=len(first["sets"]["reliability"]),
        heldout_gold_good_rate=round(float(y_held.mean()), 4),
        labelled_gold_good_rate=round(float(np.mean([g > scfg.threshold for g in first["gold_by_id"].values()])), 4),
        gold_seconds=round(gold_seconds, 1),
        simulate_seconds=round(first["seconds"], 1),
    )
    for r, run in enumerate(runs):
        emit(
            "reliability",
            command,
            repeat=r,
            labellers=reliability_rows(run["rel"], specs, run["sim"].gold_agreement),
            prevalence=round(run["rel"].prevalence, 4),
            iterations=run["rel"].iterations,
        )
        emit(
            "label_quality",
            command,
            repeat=r,
            **{c: gold_agreement(exs, run["gold_by_id"], scfg.threshold) for c, exs in run["sets"].items()},
        )

    # 3. the seed model (cached), scored on the held-out items
    from bench_active import train_from_seed
    from bench_labels import accuracy_ci

    from reward_training.evaluate import accuracy_difference, points_with_interval
    from reward_training.model import predict_mean_spread
    from reward_training.training import seed_phase

    kw = {"max_length": cfg.max_length, "batch_size": cfg.eval_batch_size, "bf16": cfg.bf16}
    t0 = time.perf_counter()
    seed_ex, _ = D.seed_and_eval_snippets(cfg, data_cfg)
    seed = seed_phase(cfg, data_cfg, seed_ex, progress=False)
    seed_state = {k: v.detach().clone() for k, v in seed.model.state_dict().items()}
    p_seed = predict_mean_spread(seed.model, seed.tok, t_held, **kw)[0]
    seed_seconds = time.perf_counter() - t0

    # 4. train on each combination, score on the held-out items
    hits = {c: [] for c in ("majority", "reliability")}
    rows = []
    for r, run in enumerate(runs):
        preds = {}
        for combine, exs in run["sets"].items():
            t0 = time.perf_counter()
            model, tok, res = train_from_seed(cfg, seed, seed_state, exs, seed_ex)  # exs: already combined
            train_seconds = time.perf_counter() - t0
            preds[combine] = predict_mean_spread(model, tok, t_held, **kw)[0]
            hits[combine].append(((preds[combine] > 0.5) == (y_held > 0.5)).astype(float))
            rows.append(
                {
                    "combine": combine,
                    "repeat": r,
                    "train_items": len(exs),
                    **accuracy_ci(y_held, preds[combine]),
                    "train_seconds": round(train_seconds, 1),
                    "best_epoch": res.best_epoch if res else None,
                    "epochs": len(res.evals) - 1 if res and res.evals else None,
                }
            )
        if args.repeats > 1:
            diff = accuracy_difference(y_held, preds["reliability"], preds["majority"], seed=cfg.random_seed)
            emit("repeat", command, repeat=r, rows=rows[-2:], reliability_minus_majority=diff)

    pooled = {c: np.mean(h, axis=0) for c, h in hits.items()}  # per item, the share of repeats right
    pooled["seed_only"] = ((p_seed > 0.5) == (y_held > 0.5)).astype(float)

    def points(values: np.ndarray) -> dict:
        return points_with_interval(values, seed=cfg.random_seed)

    emit(
        "heldout_accuracy",
        command,
        heldout=len(held_items),
        labelled_items=len(to_label),
        repeats=args.repeats,
        accuracy={c: points(v) for c, v in pooled.items()},  # points = accuracy in %, 95% bootstrap interval
        reliability_minus_majority=points(pooled["reliability"] - pooled["majority"]),
        majority_minus_seed_only=points(pooled["majority"] - pooled["seed_only"]),
        reliability_minus_seed_only=points(pooled["reliability"] - pooled["seed_only"]),
        rows=rows,
        reward_config={
            k: getattr(cfg, k)
            for k in ("human_lr", "human_epochs", "patience", "val_fraction", "ensemble", "ensemble_size")
        },
        seed_phase_seconds=round(seed_seconds, 1),
        seed_cached=bool(seed.info.get("cached")),
        wall_seconds=round(time.perf_counter() - started, 1),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
