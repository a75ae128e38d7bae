"""Does weighting labellers by their estimated reliability beat majority vote? Issue 14, part 4.

Three simulated labellers (``labeling_app.simulate``: the gold judge of the labelling guidelines, each
with its own flip rate; defaults 5%, 10% (``--noises``) and ``--noisy`` 35%, no bias, no skips) judge the
``--labels`` items, each item by ``--overlap`` K of them (default: all of them). Who judges what is a fixed,
balanced rotation (``rotation``): every group of K labellers in turn, so everyone judges the same number of
items (to within one) and every pair of labellers shares items, which Dawid-Skene needs to estimate everyone.
Each judgement goes through the ``db`` functions the app uses (``hold_item`` leases the item to the
labeller's session, ``record_judgement`` stores the answer from that session), in a fresh temporary database
holding only those items; the answers are ``simulate``'s own (``decide``, seeded by labeller and item), so at
full overlap the labels are the ones ``simulate()`` gives. The texts are the policy's completions
(prompt + completion, ``db.shown_text``) in ``--db``, which is only read, from a temporary copy.

The reward model is trained twice from the same IMDB seed weights with the profile's ``reward`` section
(``run_human_phase`` and the ensemble, as ``train()`` does; ``benchmarks/bench_active.py``'s
``train_from_seed``): once on ``combine: majority`` (ties dropped) and once on ``combine: reliability``
(the Dawid-Skene posterior P(good) as a soft label), both read back from the database by
``reward_training.data.load_human_examples``. A fixed set of ``--heldout`` other items is never labelled:
each model is scored there against the gold judge itself (gold score > threshold).

What to expect from the overlap. With three labellers on every item (``--overlap 3``) the posterior's hard
label is almost always the majority's: two agreeing labellers outvote the third, and even one careful
labeller against the other plus the noisy one is about a draw in log-odds (log(0.95/0.05) = 2.9 against
log(0.9/0.1) + log(0.65/0.35) = 2.2 + 0.6), settled by the estimated rates and the prevalence prior, so only
the soft label differs (``label_quality``'s ``hard_labels_differ`` counts the exceptions). With two per item
(``--overlap 2``, what teams usually pay for) every disagreement is a tie, which majority drops while the
posterior follows the more reliable labeller: 1 - P(both right) - P(both wrong), averaged over the three
pairs, is about 30% of the items, which only the reliability model trains on.

Figures (one JSON line each):
- ``setup``: counts (completions, held out, labelled items, judgements per labeller), the overlap, how many
  items have each number of judgements and how many each pair of labellers shares, the labellers, the gold
  good rates, seconds per step;
- ``reliability``: per labeller, the estimated accuracy (and sensitivity, specificity) beside the true
  1 - noise and the share of its answers that agree with gold;
- ``label_quality``: on the labelled items, how often the majority label and the posterior (> 0.5) agree
  with gold, and their Brier score against it: the label noise each way leaves in the training targets;
  also how many items majority drops as ties, the posterior's agreement on the items majority keeps (the
  same items as ``majority``) and on the ties (which only the reliability model trains on);
- ``repeat`` (with ``--repeats`` > 1): each labeller seed's accuracies and difference;
- ``heldout_accuracy``: held-out gold accuracy with a 95% interval of the seed-only model, majority and
  reliability, and the paired difference reliability - majority with its 95% bootstrap interval (over
  held-out items; with several repeats, each item's difference is first averaged over the repeats, so the
  reported difference is the mean of the repeats' differences).

Interval width: the paired difference's 95% interval is about +-1.96 sqrt(d / N) for ``--heldout`` N, with d
the share of held-out items the two models disagree on (d was about 0.17 in the first overlap-3 run: +-3.3
points at N = 600). So N = 750 gives about +-3 points, N = 1,650 +-2, N = 3,000 +-1.5; several ``--repeats``
narrow it further as far as the models' disagreements vary between labeller seeds. ``--heldout`` +
``--labels`` must fit in the database (4,500 completions in the one below).

    RLHF_ARTIFACTS=$PWD/artifacts flock /tmp/rlhf-cpu.lock \\
        python benchmarks/bench_reliability.py --db /tmp/h14/queue.sqlite --heldout 3000 --labels 1000 \\
        --overlap 2 --repeats 3

and the same with ``--overlap 3`` (the default) for the full-overlap figure on the same items and seeds.

Measured (1 Dec night, overlap 2, heldout 3000; stopped after 2 of the 3 repeats): majority dropped 271 and 301
of the 1,000 items as ties, on which the posterior agreed with gold 86% and 76%; reliability - majority = +2.1
points (95% CI +0.8 to +3.4) and +3.3 (+1.8 to +4.6). At overlap 3 (heldout 600, 1 Dec afternoon): +1.2 (-2.2
to +4.5). Figures and reading: docs/reward_model.md.

``--quick`` is a smaller run (300 held out, 400 labelled items). The seed phase and the gold judge are
cached under ``$RLHF_ARTIFACTS`` (``--artifacts``); make the database as ``bench_labels.py`` says.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
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


def check_overlap(overlap: int | None, n_labellers: int) -> int:
    """``--overlap`` (None: every labeller on every item), checked to be 2..``n_labellers``."""
    k = n_labellers if overlap is None else overlap
    if not 2 <= k <= n_labellers:
        raise UserError(
            f"--overlap {k} is not between 2 and the {n_labellers} labellers.",
            f"use 2 to {n_labellers} (the default {n_labellers}: every labeller judges every item).",
        )
    return k


def rotation(n_labellers: int, overlap: int, n_items: int) -> list[tuple[int, ...]]:
    """Which labellers (indices) judge each of ``n_items`` items: every group of ``overlap`` labellers once per
    cycle of C(n_labellers, overlap) items, each item taking the unused group whose members have judged fewest
    so far (the first such in ``itertools.combinations`` order). After every item each labeller's count is
    within one of the others' (checked for up to 5 labellers in the tests), and after one cycle every pair of
    labellers shares an item; at full overlap everyone judges everything."""
    groups = list(itertools.combinations(range(n_labellers), overlap))
    counts = [0] * n_labellers
    out: list[tuple[int, ...]] = []
    left: list[tuple[int, ...]] = []
    for _ in range(n_items):
        if not left:
            left = list(groups)
        group = min(left, key=lambda g: sum(counts[i] for i in g))
        left.remove(group)
        for i in group:
            counts[i] += 1
        out.append(group)
    return out


def judge_in_rotation(engine, ids: Sequence[int], cfg, gold: dict[str, float]):
    """Let ``cfg.labelers`` judge the completions ``ids``, ``cfg.overlap`` per item in :func:`rotation`, each
    judgement as the app makes it: ``db.hold_item`` leases the item to the labeller's session and
    ``db.record_judgement`` stores the answer from that session. The answer is ``simulate``'s (``decide`` with
    ``decision_rng(seed, labeller, item)``, on the gold score of ``db.shown_text``); returns a
    ``SimulationResult``."""
    import db
    from labeling_app.simulate import SimulationResult, decide, decision_rng

    t0 = time.perf_counter()
    specs = cfg.labelers
    who = {s.name: db.get_or_create_labeler(engine, s.name) for s in specs}
    per = {s.name: 0 for s in specs}
    counts = {"good": 0, "bad": 0, "skip": 0}
    agree = {s.name: [0, 0] for s in specs}
    for cid, group in zip(ids, rotation(len(specs), cfg.overlap, len(ids))):
        for k in group:
            spec, key = specs[k], f"bench-{specs[k].name}"
            item = db.hold_item(engine, who[spec.name], session_key=key, completion_id=cid, overlap=cfg.overlap)
            if item is None:
                raise RuntimeError(f"completion {cid} could not be leased to {spec.name} (overlap {cfg.overlap})")
            p = gold[db.shown_text(item.prompt, item.completion)]
            label = decide(p, spec, decision_rng(cfg.seed, spec.name, cid), cfg.threshold)
            db.record_judgement(
                engine,
                labeler_id=who[spec.name],
                completion_id=cid,
                label=label,
                seconds=cfg.seconds,
                session_key=key,
                overlap=cfg.overlap,
            )
            per[spec.name] += 1
            counts[label] += 1
            if label != "skip":
                agree[spec.name][0] += int((label == "good") == (p > cfg.threshold))
                agree[spec.name][1] += 1
    return SimulationResult(
        n_recorded=sum(per.values()),
        per_labeler=per,
        label_counts=counts,
        gold_agreement={k: round(a / t, 4) if t else float("nan") for k, (a, t) in agree.items()},
        seconds=time.perf_counter() - t0,
        exhausted=False,
    )


def judge_items(items: Sequence, sim_cfg, gold: dict[str, float], path: Path):
    """Store ``items`` in a fresh database at ``path`` and let the simulated labellers judge them in rotation
    (:func:`judge_in_rotation`); returns (engine, result, gold score per new completion id)."""
    import db

    engine = db.connect(f"sqlite:///{path}")
    ids = db.add_completions(
        engine, [db.NewCompletion(prompt=it.prompt, text=it.completion, gen_params={}) for it in items]
    )
    by_id = {cid: gold[db.shown_text(it.prompt, it.completion)] for cid, it in zip(ids, items)}
    result = judge_in_rotation(engine, ids, sim_cfg, gold)
    return engine, result, by_id


def coverage(judgements: Sequence[dict], names: Sequence[str]) -> dict:
    """From ``db.judgement_rows``: how many items have 1, 2, ... good/bad judgements, and how many items
    each pair of labellers both judged (the overlap Dawid-Skene learns from)."""
    by_item: dict[int, set[str]] = {}
    for j in judgements:
        if j["label"] in ("good", "bad"):
            by_item.setdefault(j["completion_id"], set()).add(j["labeler"])
    sizes = np.bincount([len(v) for v in by_item.values()], minlength=len(names) + 1)
    return {
        "items_by_judgements": {str(k): int(n) for k, n in enumerate(sizes) if n},
        "shared_items": {
            f"{a}+{b}": sum(1 for v in by_item.values() if a in v and b in v)
            for a, b in itertools.combinations(names, 2)
        },
    }


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


def label_quality(sets: dict, gold_by_id: dict[int, float], threshold: float) -> dict:
    """``gold_agreement`` of the majority and the reliability labels, and on the same items: the posterior's
    on the items majority keeps, how many items majority drops as ties and the posterior's agreement on
    those, and how many kept items the two hard labels differ on."""
    majority, posterior = sets["majority"], sets["reliability"]
    kept = {e.group: e.label for e in majority}
    on_kept = [e for e in posterior if e.group in kept]
    ties = [e for e in posterior if e.group not in kept]
    return {
        "majority": gold_agreement(majority, gold_by_id, threshold),
        "reliability": gold_agreement(posterior, gold_by_id, threshold),
        "ties_dropped_by_majority": len(ties),
        "reliability_on_majority_items": gold_agreement(on_kept, gold_by_id, threshold),
        "reliability_on_ties": gold_agreement(ties, gold_by_id, threshold),
        "hard_labels_differ": sum(1 for e in on_kept if e.label != 0.5 and (e.label > 0.5) != (kept[e.group] > 0.5)),
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
    ap.add_argument(
        "--heldout", type=int, default=600, help="items scored against gold, never labelled (750: about +-3 points)"
    )
    ap.add_argument("--labels", type=int, default=1000, help="items labelled (each by --overlap labellers), trained on")
    ap.add_argument(
        "--overlap", type=int, default=None, help="labellers per item, 2..their number (default: all of them)"
    )
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
    from bench_labels import offline_profile

    cfg, data_cfg, scfg, gcfg = offline_profile(args)
    import db
    from common.gold import GoldJudge
    from reward_training import data as D
    from reward_training.reliability import dawid_skene

    specs = labeller_specs(args.noises, args.noisy)
    overlap = check_overlap(args.overlap, len(specs))
    sim_cfgs = [
        dataclasses.replace(
            scfg,
            labelers=specs,
            overlap=overlap,
            n_labels=overlap * args.labels,
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

        # 2. labels: `overlap` labellers per item in rotation, read back as majority and as reliability labels
        runs = []
        for r, sim_cfg in enumerate(sim_cfgs):
            t0 = time.perf_counter()
            engine, sim, gold_by_id = judge_items(to_label, sim_cfg, gold, Path(tmp) / f"labels-{r}.sqlite")
            try:
                judged = db.judgement_rows(engine)
                rel = dawid_skene((j["completion_id"], j["labeler"], j["label"]) for j in judged)
                sets = {c: D.load_human_examples(engine, c) for c in ("majority", "reliability")}
            finally:
                engine.dispose()
            for exs in sets.values():
                D.check_two_classes(exs)
            cover = coverage(judged, [s.name for s in specs])
            runs.append({"sim": sim, "rel": rel, "sets": sets, "gold_by_id": gold_by_id, "coverage": cover})
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
        overlap=overlap,
        **first["coverage"],
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
            **label_quality(run["sets"], run["gold_by_id"], scfg.threshold),
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
