"""Simulated labellers: stand-ins for people in the demo, the tests and the benchmarks.

Each simulated labeller works through the queue with the SAME ``db`` functions the app uses
(``get_or_create_labeler``, ``next_item(..., session_key=..., overlap=...)``, ``record_judgement``)
and judges every item as the labelling guidelines (``configs/guidelines.md``) say, through the gold
judge (:mod:`common.gold`), which the reward model never sees:

    p = gold score of db.shown_text(prompt, completion)   (the text the reward model learns from)
      = P(positive) x on_topic x fluency                  (positive, about the film, fluent English)
    good = p > threshold + bias          (bias > 0: a harsher labeller, < 0: a more lenient one)
    flip the answer with probability noise; answer 'skip' with probability skip_rate

Comparisons (:func:`simulate_comparisons`, the pair queue ``db.next_pair``) are judged by the same
gold judge: the completion whose shown text scores higher is preferred, ``tie`` when the two scores
are within ``tie_margin``; the answer is flipped with probability ``noise``, and with probability
``position_bias`` the labeller picks whichever completion is on the left without judging (the
left side is drawn per pair and session, as the app draws it: ``db.shown_left``).

Every decision comes from a random generator seeded by (seed, labeller name, completion id), so a
labeller's answer to an item does not depend on the order items arrive in, and a rerun gives the
same labels. Labellers take turns (one item each, round robin), as people labelling at the same
time would; ``overlap=k`` lets up to k labellers judge each item, which is what agreement
statistics (Cohen's kappa on the stats page) need.

CLI (settings from the ``simulate`` key of the profile's ``demo`` section)::

    python -m labeling_app.simulate --n-labels 300 --set overlap=2
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from common.config import from_dict, read_profile
from common.errors import ConfigError, UserError, cli_entry, setup_logging
from common.gold import GoldConfig

log = logging.getLogger(__name__)

ScoreFn = Callable[[list[str]], Any]


@dataclass
class LabelerSpec:
    """One simulated labeller."""

    name: str = field(default="sim-1", metadata={"help": "labeller name stored in the database"})
    noise: float = field(default=0.1, metadata={"help": "probability of flipping the gold answer"})
    bias: float = field(
        default=0.0, metadata={"help": "threshold shift: says good only when the gold score > threshold + bias"}
    )
    skip_rate: float = field(default=0.0, metadata={"help": "probability of answering 'skip'"})
    position_bias: float = field(
        default=0.0, metadata={"help": "comparisons: probability of picking the left completion without judging"}
    )

    def validate(self) -> None:
        if not 0.0 <= self.noise <= 1.0:
            raise ConfigError(
                f"labeler {self.name!r}: noise={self.noise} is not a probability.", "use 0 <= noise <= 1."
            )
        if not 0.0 <= self.skip_rate < 1.0:
            raise ConfigError(f"labeler {self.name!r}: skip_rate={self.skip_rate} must be in [0, 1).", "use e.g. 0.02.")
        if not -1.0 < self.bias < 1.0:
            raise ConfigError(f"labeler {self.name!r}: bias={self.bias} must be in (-1, 1).", "use e.g. 0.1.")
        if not 0.0 <= self.position_bias <= 1.0:
            raise ConfigError(
                f"labeler {self.name!r}: position_bias={self.position_bias} is not a probability.", "use e.g. 0.05."
            )


def _default_labelers() -> list[LabelerSpec]:
    return [
        LabelerSpec("sim-ann", noise=0.05),
        LabelerSpec("sim-ben", noise=0.15),
        LabelerSpec("sim-cat", noise=0.10, bias=0.1),
    ]


@dataclass
class SimulateConfig:
    """Simulated labelling (the ``simulate`` key of the ``demo`` section)."""

    n_labels: int = field(default=1000, metadata={"help": "judgements to record in total (over all labellers)"})
    labelers: list[LabelerSpec] = field(
        default_factory=_default_labelers, metadata={"help": "the simulated labellers (name, noise, bias, skip_rate)"}
    )
    overlap: int = field(
        default=2, metadata={"help": "at most this many labellers judge one item (>1 gives agreement statistics)"}
    )
    threshold: float = field(default=0.5, metadata={"help": "gold score above which an unbiased labeller says good"})
    order: Literal["random", "uncertain"] = field(
        default="random", metadata={"help": "queue order passed to db.next_item: 'random' or 'uncertain'"}
    )
    seed: int = field(default=0, metadata={"help": "seed of every labeller's decisions"})
    seconds: float = field(default=2.0, metadata={"help": "'seconds spent' recorded with each judgement"})
    tie_margin: float = field(default=0.02, metadata={"help": "comparisons: gold scores closer than this are a tie"})

    def validate(self) -> None:
        if self.n_labels < 0:
            raise ConfigError(f"simulate.n_labels={self.n_labels} must be >= 0.", "use e.g. 1000.")
        if not self.labelers:
            raise ConfigError("simulate.labelers is empty.", "give at least one labeller (name, noise).")
        names = [s.name for s in self.labelers]
        if len(set(names)) != len(names):
            raise ConfigError(f"simulate.labelers has duplicate names {names}.", "give each labeller its own name.")
        for spec in self.labelers:
            spec.validate()
        if self.overlap < 1:
            raise ConfigError(f"simulate.overlap={self.overlap} must be >= 1.", "use 1 (no overlap) or 2-3.")
        if self.order not in ("random", "uncertain"):
            raise ConfigError(f"simulate.order={self.order!r} is not allowed.", "use 'random' or 'uncertain'.")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"simulate.threshold={self.threshold} must be in (0, 1).", "use 0.5.")
        if not 0.0 <= self.tie_margin < 1.0:
            raise ConfigError(f"simulate.tie_margin={self.tie_margin} must be in [0, 1).", "use e.g. 0.02.")


@dataclass
class SimulationResult:
    n_recorded: int
    per_labeler: dict[str, int]
    label_counts: dict[str, int]
    gold_agreement: dict[str, float]  # per labeller: share of good/bad answers equal to the gold label
    seconds: float
    exhausted: bool  # the queue ran out before n_labels

    def as_dict(self) -> dict:
        return {
            "n_recorded": self.n_recorded,
            "per_labeler": self.per_labeler,
            "label_counts": self.label_counts,
            "gold_agreement": self.gold_agreement,
            "seconds": round(self.seconds, 2),
            "exhausted": self.exhausted,
        }


# ---------------------------------------------------------------------------- pure decisions


def decision_rng(seed: int, labeler: str, completion_id: int) -> np.random.Generator:
    """A generator that depends only on (seed, labeller, item): order-independent decisions."""
    h = int.from_bytes(hashlib.sha256(labeler.encode()).digest()[:4], "little")
    return np.random.default_rng([seed, h, int(completion_id)])


def decide(gold_p: float, spec: LabelerSpec, rng: np.random.Generator, threshold: float = 0.5) -> str:
    """'good', 'bad' or 'skip' for one item, from its gold score (P(positive) x on_topic x fluency)."""
    u_skip, u_flip = rng.random(2)
    if u_skip < spec.skip_rate:
        return "skip"
    good = gold_p > threshold + spec.bias
    if u_flip < spec.noise:
        good = not good
    return "good" if good else "bad"


def decide_pair(
    gold_a: float, gold_b: float, left: str, spec: LabelerSpec, rng: np.random.Generator, tie_margin: float = 0.02
) -> str:
    """'a', 'b', 'tie' or 'skip' for one comparison, from the gold scores of its two completions and
    the side (``left``, 'a' or 'b') shown on the left."""
    u_skip, u_position, u_flip = rng.random(3)
    if u_skip < spec.skip_rate:
        return "skip"
    if u_position < spec.position_bias:
        return left
    if abs(gold_a - gold_b) < tie_margin:
        return "tie"
    better = "a" if gold_a > gold_b else "b"
    if u_flip < spec.noise:
        return "b" if better == "a" else "a"
    return better


# ---------------------------------------------------------------------------- the loop


def simulate(
    engine, cfg: SimulateConfig, score_fn: ScoreFn, *, progress: bool = True, session_prefix: str = "sim"
) -> SimulationResult:
    """Record up to ``cfg.n_labels`` judgements from the simulated labellers through ``db``.

    ``score_fn(texts) -> gold score in [0, 1]`` is the gold judge (``GoldJudge.score``: P(positive) x
    on_topic x fluency, the guidelines' three parts).
    """
    import db

    cfg.validate()
    t0 = time.perf_counter()
    ids = {s.name: db.get_or_create_labeler(engine, s.name) for s in cfg.labelers}
    active = list(cfg.labelers)
    per = {s.name: 0 for s in cfg.labelers}
    counts = {"good": 0, "bad": 0, "skip": 0}
    agree = {s.name: [0, 0] for s in cfg.labelers}
    n = 0
    bar = _bar(cfg.n_labels, progress)
    while n < cfg.n_labels and active:
        for spec in list(active):
            if n >= cfg.n_labels:
                break
            item = db.next_item(
                engine,
                ids[spec.name],
                session_key=f"{session_prefix}-{spec.name}",
                overlap=cfg.overlap,
                order=cfg.order,
            )
            if item is None:
                active.remove(spec)
                continue
            p = float(np.asarray(score_fn([db.shown_text(item.prompt, item.completion)]))[0])
            label = decide(p, spec, decision_rng(cfg.seed, spec.name, item.completion_id), cfg.threshold)
            db.record_judgement(
                engine, labeler_id=ids[spec.name], completion_id=item.completion_id, label=label, seconds=cfg.seconds
            )
            n += 1
            per[spec.name] += 1
            counts[label] += 1
            if label != "skip":
                agree[spec.name][0] += int((label == "good") == (p > cfg.threshold))
                agree[spec.name][1] += 1
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    exhausted = n < cfg.n_labels
    if exhausted:
        log.warning("the queue ran out after %d of %d judgements (add completions or lower overlap)", n, cfg.n_labels)
    return SimulationResult(
        n_recorded=n,
        per_labeler=per,
        label_counts=counts,
        gold_agreement={k: round(a / t, 4) if t else float("nan") for k, (a, t) in agree.items()},
        seconds=time.perf_counter() - t0,
        exhausted=exhausted,
    )


@dataclass
class PairSimulationResult:
    n_recorded: int
    per_labeler: dict[str, int]
    choice_counts: dict[str, int]
    gold_agreement: dict[str, float]  # per labeller: share of a/b answers that prefer the higher gold score
    share_left: float  # of the a/b answers, the share that picked the left side
    seconds: float
    exhausted: bool

    def as_dict(self) -> dict:
        return {**self.__dict__, "seconds": round(self.seconds, 2)}


def simulate_comparisons(
    engine,
    cfg: SimulateConfig,
    score_fn: ScoreFn,
    *,
    n: int | None = None,
    progress: bool = False,
    session_prefix: str = "sim-pairs",
) -> PairSimulationResult:
    """Record up to ``n`` (default ``cfg.n_labels``) pair judgements from the simulated labellers,
    through the pair queue the Compare page uses (``db.next_pair``, ``db.record_pair_judgement``),
    each labeller in turn. Make the pairs first (``db.make_comparisons``). Decisions are seeded by
    (seed, labeller, comparison id), so a rerun gives the same choices."""
    import db

    cfg.validate()
    total = cfg.n_labels if n is None else int(n)
    t0 = time.perf_counter()
    ids = {s.name: db.get_or_create_labeler(engine, s.name) for s in cfg.labelers}
    active = list(cfg.labelers)
    per = {s.name: 0 for s in cfg.labelers}
    counts = {"a": 0, "b": 0, "tie": 0, "skip": 0}
    agree = {s.name: [0, 0] for s in cfg.labelers}
    left_picks = decisive = done = 0
    bar = _bar(total, progress)
    while done < total and active:
        for spec in list(active):
            if done >= total:
                break
            key = f"{session_prefix}-{spec.name}"
            pair = db.next_pair(engine, ids[spec.name], session_key=key, overlap=cfg.overlap)
            if pair is None:
                active.remove(spec)
                continue
            gold_a, gold_b = (
                float(x)
                for x in np.asarray(score_fn([db.shown_text(pair.prompt, pair.a), db.shown_text(pair.prompt, pair.b)]))
            )
            left = db.shown_left(pair.comparison_id, key)
            rng = decision_rng(cfg.seed, f"{spec.name}/pairs", pair.comparison_id)
            choice = decide_pair(gold_a, gold_b, left, spec, rng, cfg.tie_margin)
            db.record_pair_judgement(
                engine,
                labeler_id=ids[spec.name],
                comparison_id=pair.comparison_id,
                choice=choice,
                left_side=left,
                seconds=cfg.seconds,
                session_key=key,
                overlap=cfg.overlap,
            )
            done += 1
            per[spec.name] += 1
            counts[choice] += 1
            if choice in ("a", "b"):
                decisive += 1
                left_picks += int(choice == left)
                if gold_a != gold_b:
                    agree[spec.name][0] += int((choice == "a") == (gold_a > gold_b))
                    agree[spec.name][1] += 1
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    exhausted = done < total
    if exhausted:
        log.warning("the pair queue ran out after %d of %d judgements (make more comparisons)", done, total)
    return PairSimulationResult(
        n_recorded=done,
        per_labeler=per,
        choice_counts=counts,
        gold_agreement={k: round(a / t, 4) if t else float("nan") for k, (a, t) in agree.items()},
        share_left=round(left_picks / decisive, 4) if decisive else float("nan"),
        seconds=time.perf_counter() - t0,
        exhausted=exhausted,
    )


def agreement(engine) -> dict:
    """Pairwise Cohen's kappa between labellers and its item-weighted mean (as on the stats page)."""
    import db
    from labeling_app import metrics

    frame = db.judgements_frame(engine)
    pairs = metrics.pairwise_kappa(frame)
    return {
        "mean_kappa": metrics.mean_kappa(pairs),
        "pairs": [
            {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
            for row in pairs.to_dict("records")
        ],
    }


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="simulated labels", unit="label", dynamic_ncols=True)


# ---------------------------------------------------------------------------- config + CLI


@dataclass
class _DemoView:
    """The two keys of the ``demo`` section this module reads (the rest belongs to ``demo``)."""

    simulate: SimulateConfig = field(default_factory=SimulateConfig)
    gold: GoldConfig = field(default_factory=GoldConfig)


def load_simulate_config(
    profile: Path | str | None = None, overrides: Sequence[str] = ()
) -> tuple[SimulateConfig, GoldConfig]:
    """``demo.simulate`` and ``demo.gold`` of the profile, with ``key=value`` overrides
    (keys relative to ``simulate``; ``gold.C=4`` reaches the gold judge)."""
    import yaml

    raw = read_profile(profile).get("demo") or {}
    view = {"simulate": dict(raw.get("simulate") or {}), "gold": dict(raw.get("gold") or {})}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE.", "write it as --set key=value.")
        key, text = item.split("=", 1)
        keys = key.strip().split(".")
        target = view["gold"] if keys[0] == "gold" else view["simulate"]
        keys = keys[1:] if keys[0] in ("gold", "simulate") else keys
        for k in keys[:-1]:
            target = target.setdefault(k, {})
        target[keys[-1]] = yaml.safe_load(text) if text.strip() else ""
    cfg = from_dict(_DemoView, view, where="demo")
    cfg.simulate.validate()
    cfg.gold.validate()
    return cfg.simulate, cfg.gold


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m labeling_app.simulate",
        description="Label the queue with simulated labellers (the gold judge of the labelling guidelines + "
        "noise and bias per labeller) through the db API.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="settings (demo.simulate in the profile, --set KEY=VALUE):\n" + _describe(),
    )
    p.add_argument(
        "--config", type=Path, default=None, help="profile file (default: $RLHF_CONFIG or configs/default.yaml)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a simulate key (e.g. overlap=3) or a gold key (gold.C=4)",
    )
    p.add_argument("--n-labels", type=int, default=None, help="judgements to record (overrides n_labels)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--pairs", action="store_true", help="judge comparisons (python -m db pairs make) instead of single items"
    )
    return p


def _describe() -> str:
    from common.config import describe

    return describe(SimulateConfig) + "\n labeller fields:\n" + describe(LabelerSpec)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    import json

    import db
    from common.gold import GoldJudge
    from common.guidelines import load_guidelines

    setup_logging()
    args = build_parser().parse_args(argv)
    overrides = list(args.overrides) + ([f"n_labels={args.n_labels}"] if args.n_labels is not None else [])
    cfg, gold_cfg = load_simulate_config(args.config, overrides)
    load_guidelines()  # the labellers follow them: a missing or empty file is one line, before any work
    engine = db.connect()
    if args.pairs:
        first = db.get_or_create_labeler(engine, cfg.labelers[0].name)
        if db.pair_queue_size(engine, first, overlap=cfg.overlap) == 0:
            raise UserError("the comparison queue is empty.", "make pairs first: python -m db pairs make.")
        judge = GoldJudge.load_or_fit(gold_cfg)
        result = simulate_comparisons(engine, cfg, judge.score, progress=not args.quiet)
        print(json.dumps({**result.as_dict(), "pairs": db.pair_stats(engine)}, indent=2, default=str))
        return 0
    if db.queue_size(engine, db.get_or_create_labeler(engine, cfg.labelers[0].name), overlap=cfg.overlap) == 0:
        raise UserError(
            "the labelling queue is empty.", "fill it first: `make generate` (python -m base_policy generate)."
        )
    judge = GoldJudge.load_or_fit(gold_cfg)
    result = simulate(engine, cfg, judge.score, progress=not args.quiet)
    print(json.dumps({**result.as_dict(), "agreement": agreement(engine)}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
