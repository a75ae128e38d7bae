"""The two training phases and the whole run: data → seed phase → human phase → evaluation → save.

``train(cfg, engine)`` is what ``python -m reward_training`` calls; ``train(cfg, examples=[...])``
takes the human labels directly (tests, benchmarks, notebooks).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.config import to_dict
from common.errors import UserError
from common.fmt import fmt_number
from common.paths import artifacts_root, atomic_dir, new_run_id, reward_models_dir, write_json, write_latest
from common.precision import use_bf16
from reward_training import data as D
from reward_training.config import RewardConfig, seed_cache_key
from reward_training.evaluate import (
    TfidfBaseline,
    accuracy_difference,
    binary_metrics,
    fmt_difference,
    pairwise_difference,
    pairwise_metrics,
    plot_calibration,
    plot_learning_curve,
    plot_losses,
    short,
)
from reward_training.model import (
    FitResult,
    attach_heads,
    attach_members,
    ensemble_size,
    fit,
    heads_detached,
    load_backbone,
    predict_logits,
    predict_mean_spread,
    predict_proba,
    quiet_hf,
    reward_score,
    save_heads,
    save_members,
)

log = logging.getLogger(__name__)

#: Written beside the weights; ``load_reward_fn`` reads it for the truncation length and bf16.
INFERENCE_FILE = "reward_config.json"


def seed_cache_root() -> Path:
    return artifacts_root() / "reward_seed"


@dataclass
class SeedResult:
    model: torch.nn.Module
    tok: object
    info: dict = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)


# ----------------------------------------------------------------------------- phase 1: IMDB seed


def seed_phase(
    cfg: RewardConfig,
    data_cfg,
    seed_examples: Sequence[D.Example],
    *,
    progress: bool = True,
    cache_root: Path | None = None,
) -> SeedResult:
    """The backbone after the IMDB seed phase, from the cache when the seed config is unchanged.

    With ``seed_mode: skip`` the backbone is returned as it is (it is already an IMDB classifier).
    """
    backbone = cfg.backbone_or_default
    if cfg.seed_mode == "skip":
        model, tok = load_backbone(backbone, freeze_embeddings=cfg.freeze_embeddings)
        return SeedResult(model, tok, {"skipped": True, "backbone": backbone})
    folder = (cache_root or seed_cache_root()) / seed_cache_key(cfg, data_cfg)
    info_file = folder / "seed_info.json"
    if info_file.is_file():
        info = json.loads(info_file.read_text())
        log.info("seed phase: reusing the cached seed model %s (trained on %d IMDB snippets)", folder, info["examples"])
        model, tok = load_backbone(str(folder), freeze_embeddings=cfg.freeze_embeddings)
        return SeedResult(model, tok, {**info, "cached": True, "path": str(folder)}, info.get("losses", []))
    log.info("seed phase: %d IMDB snippets, %.1f epoch(s) on %s", len(seed_examples), cfg.seed_epochs, backbone)
    torch.manual_seed(cfg.random_seed)
    model, tok = load_backbone(backbone, freeze_embeddings=cfg.freeze_embeddings)
    res = fit(
        model,
        tok,
        [e.text for e in seed_examples],
        [e.label for e in seed_examples],
        epochs=cfg.seed_epochs,
        lr=cfg.seed_lr,
        batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        weight_decay=cfg.weight_decay,
        warmup_fraction=cfg.warmup_fraction,
        bf16=cfg.bf16,
        seed=cfg.random_seed,
        desc="seed phase",
        progress=progress,
    )
    info = {"backbone": backbone, "examples": len(seed_examples), **res.summary(), "losses": res.losses}
    info.pop("evals", None)
    with atomic_dir(folder) as tmp, quiet_hf():
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / "seed_info.json", info)
    log.info(
        "seed phase: %.0f s, %.1f examples/s, loss %.3f -> %.3f; cached in %s",
        res.seconds,
        res.examples_per_s,
        np.mean(res.losses[:10]),
        np.mean(res.losses[-10:]),
        folder,
    )
    return SeedResult(model, tok, {**info, "cached": False, "path": str(folder)}, res.losses)


# ----------------------------------------------------------------------------- phase 2: human labels


def pair_scores(model, tok, cfg: RewardConfig, pairs: Sequence[D.Pair]) -> tuple[np.ndarray, np.ndarray]:
    """Scores (good-minus-bad logit of the mean head) of the chosen and of the rejected texts."""
    if not pairs:
        return np.zeros(0), np.zeros(0)
    texts = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    s = reward_score(
        predict_logits(model, tok, texts, max_length=cfg.max_length, batch_size=cfg.eval_batch_size, bf16=cfg.bf16)
    ).numpy()
    return s[: len(pairs)], s[len(pairs) :]


def human_phase(
    model,
    tok,
    cfg: RewardConfig,
    train: Sequence[D.Example],
    heldout: Sequence[D.Example],
    seed_pool: Sequence[D.Example],
    *,
    mix_ratio: float | None = None,
    pairs: Sequence[D.Pair] = (),
    heldout_pairs: Sequence[D.Pair] = (),
    progress: bool = True,
) -> FitResult:
    """Fine-tune on the human labels (plus ``mix_ratio`` seed snippets per label) and/or preference pairs
    (Bradley-Terry, ``pair_weight`` when both), with ``cfg.ensemble_size`` heads; early-stopping on the
    same weighted loss over ``heldout`` labels and ``heldout_pairs`` when there are any."""
    ratio = cfg.mix_seed_ratio if mix_ratio is None else mix_ratio
    mixed = D.mix_in_seed(train, seed_pool, ratio, cfg.random_seed) if train else []
    torch.manual_seed(cfg.random_seed + 1)  # dropout masks: the same labels give the same model, whatever ran before
    if cfg.ensemble == "heads":
        attach_heads(model, cfg.ensemble_size, seed=cfg.random_seed)
    evaluate = None
    if heldout or heldout_pairs:
        texts, labels = [e.text for e in heldout], [e.label for e in heldout]
        w = cfg.pair_weight if (heldout and heldout_pairs) else 1.0

        def evaluate() -> dict:
            out: dict = {"loss": 0.0}
            if heldout:
                m = binary_metrics(
                    labels,
                    predict_proba(
                        model, tok, texts, max_length=cfg.max_length, batch_size=cfg.eval_batch_size, bf16=cfg.bf16
                    ),
                )
                out.update(loss=m["log_loss"], accuracy=m["accuracy"])
            if heldout_pairs:
                pm = pairwise_metrics(*pair_scores(model, tok, cfg, heldout_pairs))
                out.update(loss=out["loss"] + w * pm["bt_loss"], pair_accuracy=pm["accuracy"])
            return out

    return fit(
        model,
        tok,
        [e.text for e in mixed],
        [e.label for e in mixed],
        pairs=[(p.chosen, p.rejected) for p in pairs],
        pair_weight=cfg.pair_weight,
        epochs=cfg.human_epochs,
        lr=cfg.human_lr,
        batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        weight_decay=cfg.weight_decay,
        warmup_fraction=cfg.warmup_fraction,
        bf16=cfg.bf16,
        seed=cfg.random_seed + 1,
        evaluate=evaluate,
        patience=cfg.patience,
        desc="human phase",
        progress=progress,
    )


# ----------------------------------------------------------------------------- the run


def load_human_labels(cfg: RewardConfig, engine, examples: Sequence | None) -> list[D.Example]:
    """The human labels: ``examples`` when given, else the combined judgements in the database."""
    if examples is not None:
        return D.human_examples(examples)
    return D.load_human_examples(engine, cfg.combine)


def heldout_share(cfg: RewardConfig, n: int) -> float:
    """The share of ``n`` human labels to hold out: ``heldout_fraction``, raised so that at least
    ``heldout_min`` labels are held out, but never above half of them."""
    if n <= 0:
        return cfg.heldout_fraction
    return max(cfg.heldout_fraction, min(cfg.heldout_min / n, 0.5))


def split_human_labels(
    human: Sequence[D.Example], cfg: RewardConfig, *, require_labels: bool, have_pairs: bool = False
) -> tuple[list[D.Example], list[D.Example]]:
    """(train, held-out) human labels, after checking there are two classes (or none, which gives
    the seed-only model unless ``require_labels``, or a pairs-only model when ``have_pairs``); warns
    when the held-out part is small."""
    if not human:
        if have_pairs:
            return [], []
        if require_labels:
            raise UserError(
                "there are no human labels in the database yet (--require-labels was given).",
                "label some completions first (`make label`), or drop --require-labels for the seed-only model.",
            )
        log.warning(
            "no human labels yet: training the SEED-ONLY model (IMDB sentiment stands in for the labellers). "
            "Label completions with `make label` and train again to learn what your labellers want."
        )
        return [], []
    D.check_two_classes(human)
    human_train, human_heldout = D.split_heldout(human, heldout_share(cfg, len(human)), cfg.random_seed)
    if len(human_heldout) < cfg.min_heldout:
        log.warning(
            "only %d held-out human labels (of %d): the human metrics below are rough; "
            "label more for a trustworthy estimate (reward.min_heldout=%d).",
            len(human_heldout),
            len(human),
            cfg.min_heldout,
        )
    return human_train, human_heldout


def make_scorer(model, tok, cfg: RewardConfig, *, progress: bool = True) -> Callable[[list[str]], np.ndarray]:
    """``texts -> P(good)`` with the evaluation settings of ``cfg`` (the model as it is when called)."""

    def score(texts: list[str]) -> np.ndarray:
        return predict_proba(
            model,
            tok,
            texts,
            max_length=cfg.max_length,
            batch_size=cfg.eval_batch_size,
            bf16=cfg.bf16,
            progress=progress,
        )

    return score


def split_validation(train: Sequence[D.Example], cfg: RewardConfig) -> tuple[list[D.Example], list[D.Example]]:
    """(fit, validation) parts of the human TRAINING labels: ``val_fraction`` of them (stratified, grouped
    by completion) pick the epoch. The held-out labels stay out of every choice, so the reported human
    metrics are not tuned on; with ``val_fraction: 0`` or fewer than 20 labels there is no validation part."""
    if cfg.val_fraction <= 0 or len(train) < 20:
        return list(train), []
    return D.split_heldout(train, cfg.val_fraction, cfg.random_seed + 2)


def split_validation_pairs(pairs: Sequence[D.Pair], cfg: RewardConfig) -> tuple[list[D.Pair], list[D.Pair]]:
    """(fit, validation) parts of the training pairs, as :func:`split_validation` does for labels (grouped
    by prompt; no validation part with ``val_fraction: 0`` or fewer than 20 pairs)."""
    if cfg.val_fraction <= 0 or len(pairs) < 20:
        return list(pairs), []
    return D.split_pairs(pairs, cfg.val_fraction, cfg.random_seed + 2)


def bootstrap_resample(items: Sequence, seed: int) -> list:
    """A bootstrap resample of ``items``: as many, drawn with replacement (``seed`` fixes the draw)."""
    return random.Random(seed).choices(list(items), k=len(items)) if items else []


def run_human_phase(
    model,
    tok,
    cfg: RewardConfig,
    train: Sequence[D.Example],
    seed_pool: Sequence[D.Example],
    *,
    mix_ratio: float | None = None,
    pairs: Sequence[D.Pair] = (),
    progress: bool = True,
) -> FitResult | None:
    """:func:`human_phase` on the human training labels and/or pairs (else ``None``), early-stopping on a
    validation part of them (:func:`split_validation`, :func:`split_validation_pairs`), with a warning when
    no epoch beat the seed model there."""
    if not train and not pairs:
        return None
    fit_part, val = split_validation(train, cfg) if train else ([], [])
    fit_pairs, val_pairs = split_validation_pairs(pairs, cfg)
    if cfg.member_bootstrap and cfg.ensemble == "members" and cfg.ensemble_size > 1:
        fit_part, fit_pairs = (
            bootstrap_resample(fit_part, cfg.random_seed + 3),
            bootstrap_resample(fit_pairs, cfg.random_seed + 4),
        )
    fit_result = human_phase(
        model,
        tok,
        cfg,
        fit_part,
        val,
        seed_pool,
        mix_ratio=mix_ratio,
        pairs=fit_pairs,
        heldout_pairs=val_pairs,
        progress=progress,
    )
    fit_result.validation = {**D.label_counts(val), **({"pairs": len(val_pairs)} if pairs else {})}
    if fit_result.best_epoch == 0:
        log.warning(
            "the human phase did not lower the validation loss (%d labels and %d pairs set aside from the "
            "training data) below the seed model's (%.4f): keeping the seed weights. More labels, or labels that "
            "differ from sentiment, give it something to learn.",
            len(val),
            len(val_pairs),
            fit_result.evals[0]["loss"],
        )
    return fit_result


def train_members(
    cfg: RewardConfig,
    seed_state: dict,
    train: Sequence[D.Example],
    seed_pool: Sequence[D.Example],
    *,
    pairs: Sequence[D.Pair] = (),
    progress: bool = True,
) -> list:
    """Members 1 .. ensemble_size - 1 of an ensemble (``ensemble: members``; member 0 is the model
    :func:`run_human_phase` trained): each the seed weights plus the same human phase with ``random_seed``
    + i (its own dropout masks, order and validation split)."""
    if cfg.ensemble != "members" or cfg.ensemble_size <= 1 or (not train and not pairs):
        return []
    members = []
    for i in range(1, cfg.ensemble_size):
        member_cfg = dataclasses.replace(cfg, random_seed=cfg.random_seed + i)
        model, tok = load_backbone(cfg.backbone_or_default, freeze_embeddings=cfg.freeze_embeddings)
        model.load_state_dict(seed_state)
        log.info("ensemble member %d of %d", i + 1, cfg.ensemble_size)
        run_human_phase(model, tok, member_cfg, train, seed_pool, pairs=pairs, progress=progress)
        members.append(model.eval())
    return members


def load_pairs(cfg: RewardConfig, engine, pairs: Sequence | None) -> list[D.Pair]:
    """The preference pairs: ``pairs`` when given, else ``db.preference_pairs(engine)`` (none with
    ``pairs: off`` or without an engine); ``pairs: only`` with none is an error."""
    if cfg.pairs == "off":
        return []
    if pairs is not None:
        out = D.pair_examples(pairs)
    elif engine is not None:
        import db

        out = D.pair_examples(db.preference_pairs(engine))
    else:
        out = []
    if cfg.pairs == "only" and not out:
        raise UserError(
            "reward.pairs=only but there are no preference pairs (A/B judgements that chose a side).",
            "label some comparisons first (the app's A/B page), or set reward.pairs to auto or off.",
        )
    return out


def pairs_report(
    cfg: RewardConfig,
    pairs: Sequence[D.Pair],
    train: Sequence[D.Pair],
    heldout: Sequence[D.Pair],
    seed_scores: tuple[np.ndarray, np.ndarray] | None,
    scores: tuple[np.ndarray, np.ndarray] | None,
) -> dict:
    """The ``pairs`` part of ``metrics.json``: counts, pairwise accuracy on the held-out pairs (95% interval)
    of the seed model and of this model, and this model minus the seed model (paired interval)."""
    out: dict = {
        "mode": cfg.pairs,
        "pair_weight": cfg.pair_weight,
        "counts": {"total": D.pair_counts(pairs), "train": D.pair_counts(train), "heldout": D.pair_counts(heldout)},
    }
    if heldout and scores is not None:
        out["model"] = pairwise_metrics(*scores, seed=cfg.random_seed)
        if seed_scores is not None:
            out["seed_model"] = pairwise_metrics(*seed_scores, seed=cfg.random_seed)
            out["model_minus_seed"] = pairwise_difference(scores, seed_scores, seed=cfg.random_seed)
    return out


def ensemble_report(model, tok, cfg: RewardConfig, sets: dict[str, Sequence[D.Example]]) -> dict:
    """The ensemble's size and its mean spread (std of P(good) across heads) on each evaluation set."""
    k = ensemble_size(model)
    out: dict = {"kind": cfg.ensemble if k > 1 else None, "size": k, "spread_mean": {}}
    if k > 1:
        for name, exs in sets.items():
            if exs:
                _, spread = predict_mean_spread(
                    model, tok, [e.text for e in exs], max_length=cfg.max_length, batch_size=cfg.eval_batch_size,
                    bf16=cfg.bf16,
                )  # fmt: skip
                out["spread_mean"][name] = round(float(np.mean(spread)), 4)
    return out


def evaluate_sets(
    score: Callable[[list[str]], np.ndarray], sets: dict[str, Sequence[D.Example]]
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """P(good) and :func:`binary_metrics` on each non-empty evaluation set."""
    predicted = {name: score([e.text for e in exs]) for name, exs in sets.items() if exs}
    return predicted, {name: binary_metrics([e.label for e in sets[name]], p) for name, p in predicted.items()}


def compare_with_tfidf(
    cfg: RewardConfig,
    sets: dict[str, Sequence[D.Example]],
    predicted: dict[str, np.ndarray],
    base_train: Sequence[D.Example],
) -> tuple[dict, dict]:
    """The TF-IDF baseline fitted on ``base_train``: its metrics on each evaluation set, and the
    model's accuracy minus the baseline's with a paired bootstrap interval. Empty when
    ``cfg.baseline`` is off or ``base_train`` has one class."""
    tfidf: dict = {}
    diffs: dict = {}
    if not cfg.baseline or len({e.label > 0.5 for e in base_train}) != 2:
        return tfidf, diffs
    baseline = TfidfBaseline(seed=cfg.random_seed).fit([e.text for e in base_train], [e.label for e in base_train])
    for name, exs in sets.items():
        if exs:
            y = [e.label for e in exs]
            p_base = baseline.predict_proba([e.text for e in exs])
            tfidf[name] = binary_metrics(y, p_base)
            diffs[name] = accuracy_difference(y, predicted[name], p_base, seed=cfg.random_seed)
    return tfidf, diffs


def human_phase_gain(
    cfg: RewardConfig,
    heldout: Sequence[D.Example],
    predicted: dict[str, np.ndarray],
    seed_predicted: dict[str, np.ndarray],
) -> dict:
    """What the human labels bought: this model's held-out human accuracy minus the seed model's, in
    points with a 95% paired bootstrap interval (``{}`` without held-out labels)."""
    if not heldout or "human_heldout" not in seed_predicted or "human_heldout" not in predicted:
        return {}
    y = [e.label for e in heldout]
    d = accuracy_difference(y, predicted["human_heldout"], seed_predicted["human_heldout"], seed=cfg.random_seed)
    return {"human_heldout": d} if d else {}


def data_counts(
    cfg: RewardConfig,
    human: Sequence[D.Example],
    human_train: Sequence[D.Example],
    human_heldout: Sequence[D.Example],
    seed_examples: Sequence[D.Example],
    imdb_eval: Sequence[D.Example],
) -> dict:
    """How many examples of each kind the run used (the ``counts`` of ``metrics.json``)."""
    return {
        "human_total": D.label_counts(human),
        "human_train": D.label_counts(human_train),
        "human_heldout": D.label_counts(human_heldout),
        "seed_snippets": len(seed_examples) if cfg.seed_mode == "train" else 0,
        "seed_mixed_into_human_phase": min(int(round(len(human_train) * cfg.mix_seed_ratio)), len(seed_examples))
        if human_train
        else 0,
        "imdb_eval_snippets": len(imdb_eval),
    }


def log_evaluation(metrics: dict, names: Sequence[str]) -> None:
    for name in names:
        if name in metrics["model"]:
            log.info(
                "%s: model %s | tfidf %s | model - tfidf accuracy: %s",
                name,
                short(metrics["model"][name]),
                short(metrics["tfidf"].get(name, {})),
                fmt_difference(metrics["model_minus_tfidf"].get(name)),
            )
    gain = (metrics.get("model_minus_seed") or {}).get("human_heldout")
    if gain:
        log.info("human phase gain on held-out human labels (model - seed model): %s", fmt_difference(gain))


def write_plots(folder: Path, metrics: dict, names: Sequence[str], phase_losses: dict[str, list[float]]) -> None:
    """``calibration.png``, ``training_loss.png`` and (with a learning curve) ``learning_curve.png``."""
    plot_calibration(
        folder / "calibration.png",
        {f"{m} on {s}": metrics[m].get(s) for m in ("model", "tfidf") for s in names if metrics[m].get(s)},
    )
    plot_losses(folder / "training_loss.png", phase_losses)
    if metrics.get("learning_curve"):
        plot_learning_curve(folder / "learning_curve.png", metrics["learning_curve"])


def track_phases(folder: Path, cfg: RewardConfig, run_id: str, phase_losses: dict, evals: Sequence[dict]) -> None:
    """The run's per-step losses (seed and human phase) and the human phase's per-epoch evaluations
    as TensorBoard scalars under ``folder/tensorboard/<run_id>/`` (:mod:`common.tracking`; off with
    ``tracking.tensorboard: false``), so ``tensorboard --logdir $RLHF_ARTIFACTS`` shows reward-model
    runs beside the PPO runs. Written when the run is saved, with the run's config attached."""
    from common.tracking import open_tracker

    with open_tracker(folder, to_dict(cfg), name=run_id) as tracker:
        for phase, losses in phase_losses.items():
            key = phase.replace(" ", "_")
            for step, loss in enumerate(losses or [], start=1):
                tracker.log({f"{key}/loss": float(loss)}, step)
        for ev in evals:
            values = {f"human_phase/eval_{k}": v for k, v in ev.items() if k not in ("epoch", "step")}
            tracker.log(values, int(ev.get("step", 0)))


def save_run(
    model,
    tok,
    cfg: RewardConfig,
    metrics: dict,
    run_id: str,
    *,
    names: Sequence[str],
    phase_losses: dict,
    point_latest: bool = True,
) -> Path:
    """Write ``reward_models/<run_id>`` atomically (weights, metrics, plots, card) and (with
    ``point_latest``) point ``latest`` at it."""
    parent = reward_models_dir()
    final = parent / run_id
    with atomic_dir(final) as tmp:
        save_model(model, tok, cfg, tmp)
        write_json(tmp / "metrics.json", metrics)
        if cfg.plots:
            write_plots(tmp, metrics, names, phase_losses)
        track_phases(tmp, cfg, run_id, phase_losses, (metrics.get("human_phase") or {}).get("evals") or [])
        (tmp / "README.md").write_text(model_card(run_id, cfg, metrics))
    if point_latest:
        write_latest(parent, run_id)
    log.info("reward model saved to %s (%s)", final, "seed-only" if metrics["seed_only"] else "seed + human labels")
    return final


def register_run(engine, folder: Path, metrics: dict) -> int:
    """Record the saved reward model as a model version in the database; returns its id."""
    import db

    version = db.register_model_version(
        engine, kind="reward", name=folder.name, path=str(folder.resolve()), metrics=headline(metrics)
    )
    log.info("registered as reward model version %s", version)
    return version


def train(
    cfg: RewardConfig,
    engine=None,
    *,
    data_cfg=None,
    examples: Sequence | None = None,
    pairs: Sequence | None = None,
    require_labels: bool = False,
    learning_curve: bool = False,
    run_id: str | None = None,
    register: bool = True,
    progress: bool = True,
) -> Path:
    """Train, evaluate and save a reward model; return its folder ``$RLHF_ARTIFACTS/reward_models/<run-id>``.

    ``examples``: ``db.LabelledExample``-like records to use instead of the database (then
    nothing is registered unless an ``engine`` is given too); ``pairs``: ``db.types.PreferencePair``-like
    records likewise (``reward.pairs`` says whether they are used).
    """
    from common.config import load_config
    from common.imdb import DataConfig

    started = time.perf_counter()
    data_cfg = data_cfg or load_config(DataConfig, "data")
    if examples is None and engine is None:
        import db

        engine = db.connect()

    # 1. the human labels and pairs: check, split (the held-out parts are never trained on)
    prefs = load_pairs(cfg, engine, pairs)
    human = load_human_labels(cfg, engine, examples) if cfg.pairs != "only" else []
    human_train, human_heldout = split_human_labels(human, cfg, require_labels=require_labels, have_pairs=bool(prefs))
    pairs_train, pairs_heldout = D.split_pairs(prefs, heldout_share(cfg, len(prefs)), cfg.random_seed)

    # 2. IMDB snippets: seed training set and held-out evaluation set
    seed_examples, imdb_eval = D.seed_and_eval_snippets(cfg, data_cfg)
    sets = {"human_heldout": human_heldout, "imdb_snippets": imdb_eval}

    # 3. phase 1: seed on IMDB (cached), then phase 2: the human labels
    seed = seed_phase(cfg, data_cfg, seed_examples, progress=progress)
    model, tok = seed.model, seed.tok
    members_wanted = cfg.ensemble == "members" and cfg.ensemble_size > 1
    keep_seed = learning_curve or members_wanted
    seed_state = {k: v.detach().clone() for k, v in model.state_dict().items()} if keep_seed else None
    score = make_scorer(model, tok, cfg, progress=progress)
    # before phase 2 changes the model
    seed_predicted, seed_model = evaluate_sets(score, {"human_heldout": human_heldout})
    seed_pair_scores = pair_scores(model, tok, cfg, pairs_heldout) if pairs_heldout else None
    human_fit = run_human_phase(model, tok, cfg, human_train, seed_examples, pairs=pairs_train, progress=progress)
    if members_wanted:  # the model above is member 0; the others start from the same seed weights
        attach_members(
            model, train_members(cfg, seed_state, human_train, seed_examples, pairs=pairs_train, progress=progress)
        )

    # 4. evaluation: the model and the TF-IDF baseline, on held-out human labels and IMDB snippets
    predicted, model_metrics = evaluate_sets(score, sets)
    base_train = list(seed_examples if cfg.seed_mode == "train" else []) + list(human_train)
    tfidf, diffs = compare_with_tfidf(cfg, sets, predicted, base_train)
    gain = human_phase_gain(cfg, human_heldout, predicted, seed_predicted)
    metrics: dict = {
        "counts": data_counts(cfg, human, human_train, human_heldout, seed_examples, imdb_eval),
        "model": model_metrics,
        "tfidf": tfidf,
        "seed_model": seed_model,
        "model_minus_tfidf": diffs,
        "model_minus_seed": gain,
        "seed_phase": {k: v for k, v in seed.info.items() if k != "losses"},
        "human_phase": human_fit.summary() if human_fit else None,
        "seed_only": not human_train and not pairs_train,
        "pairs": pairs_report(
            cfg,
            prefs,
            pairs_train,
            pairs_heldout,
            seed_pair_scores,
            pair_scores(model, tok, cfg, pairs_heldout) if pairs_heldout else None,
        ),
        "ensemble": ensemble_report(model, tok, cfg, sets),
        "combine": cfg.combine,
        "config": to_dict(cfg),
        "data_config": to_dict(data_cfg),
    }
    if learning_curve:
        metrics["learning_curve"] = run_learning_curve(
            cfg, seed_state, human_train, human_heldout, seed_examples, progress=progress
        )
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    log_evaluation(metrics, list(sets))
    if "model" in metrics["pairs"]:
        pm = metrics["pairs"]["model"]
        log.info(
            "held-out pairs: pairwise accuracy %.3f (95%% CI %.3f to %.3f, n=%d); model - seed model: %s",
            pm["accuracy"],
            *pm["ci95"],
            pm["n"],
            fmt_difference(metrics["pairs"].get("model_minus_seed")),
        )

    # 5. save atomically, register it, then point `latest` at it: a failure at any step leaves
    # `latest` on a saved, registered model
    phase_losses = {"seed phase": seed.losses, "human phase": human_fit.losses if human_fit else []}
    final = save_run(
        model,
        tok,
        cfg,
        metrics,
        run_id or new_run_id(),
        names=list(sets),
        phase_losses=phase_losses,
        point_latest=False,
    )
    if register and engine is not None:
        register_run(engine, final, metrics)
    write_latest(final.parent, final.name)
    return final


def save_model(model, tok, cfg: RewardConfig, folder: Path) -> None:
    """Weights (the classifier = the mean of the ensemble heads), tokenizer (truncating at ``max_length``),
    the heads (``ensemble_heads.safetensors``, when there are several) and the inference settings."""
    tok.model_max_length = cfg.max_length
    model.config.id2label = {0: "NEGATIVE", 1: "POSITIVE"}
    model.config.label2id = {"NEGATIVE": 0, "POSITIVE": 1}
    with quiet_hf(), heads_detached(model):
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    save_heads(model, folder)
    save_members(model, folder)
    write_json(
        folder / INFERENCE_FILE,
        {
            "max_length": cfg.max_length,
            "bf16": cfg.bf16,
            "good_label": "POSITIVE",
            "good_index": 1,
            "ensemble": cfg.ensemble if ensemble_size(model) > 1 else None,
            "ensemble_size": ensemble_size(model),
            "conservative_k": cfg.conservative_k,
        },
    )


def headline(metrics: dict) -> dict:
    """The few numbers stored in the database row."""
    out = {"seed_only": metrics["seed_only"], "counts": {k: v for k, v in metrics["counts"].items()}}
    for who in ("model", "tfidf"):
        for name, m in metrics[who].items():
            for k in ("accuracy", "roc_auc", "log_loss", "ece", "n"):
                out[f"{who}/{name}/{k}"] = m.get(k)
    for name, d in (metrics.get("model_minus_tfidf") or {}).items():
        if d:
            out[f"model_minus_tfidf/{name}/points"] = d["points"]
            out[f"model_minus_tfidf/{name}/ci95"] = d["ci95"]
    for name, d in (metrics.get("model_minus_seed") or {}).items():
        if d:
            out[f"model_minus_seed/{name}/points"] = d["points"]
            out[f"model_minus_seed/{name}/ci95"] = d["ci95"]
    pm = (metrics.get("pairs") or {}).get("model")
    if pm:
        out["model/pairs_heldout/accuracy"], out["model/pairs_heldout/ci95"] = pm["accuracy"], pm["ci95"]
        out["model/pairs_heldout/n"] = pm["n"]
    if metrics.get("ensemble"):
        out["ensemble_size"] = metrics["ensemble"]["size"]
    return out


# ----------------------------------------------------------------------------- learning curve


def run_learning_curve(
    cfg: RewardConfig,
    seed_state,
    train: Sequence[D.Example],
    heldout: Sequence[D.Example],
    seed_pool: Sequence[D.Example],
    *,
    sizes: Sequence[int] | None = None,
    unseeded_sizes: Sequence[int] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Held-out human accuracy vs number of human labels: seeded (from the seed model, seed
    snippets mixed in), unseeded (from the bare backbone, human labels only), and TF-IDF on each.

    ``sizes`` defaults to ``cfg.learning_curve_sizes`` plus all labels; ``unseeded_sizes`` limits
    the (slow to converge) unseeded runs to some sizes (default: every size)."""
    if not heldout or not train:
        log.warning("learning curve skipped: it needs human labels on both sides of the split")
        return []
    y_held = [e.label for e in heldout]
    texts_held = [e.text for e in heldout]
    wanted = sizes if sizes is not None else [*cfg.learning_curve_sizes, len(train)]
    sizes = sorted({n for n in wanted if n <= len(train)})
    rows = []
    for n in sizes:
        sub = D.stratified_subset(train, n, cfg.random_seed)
        if len({e.label > 0.5 for e in sub}) < 2:
            continue
        for method in ("seeded", "unseeded"):
            if method == "unseeded" and unseeded_sizes is not None and n not in unseeded_sizes:
                continue
            torch.manual_seed(cfg.random_seed)
            model, tok = load_backbone(cfg.backbone_or_default, freeze_embeddings=cfg.freeze_embeddings)
            if method == "seeded" and seed_state is not None:
                model.load_state_dict(seed_state)
            fit_part, val = split_validation(sub, cfg)  # the held-out labels only score
            res = human_phase(
                model,
                tok,
                cfg,
                fit_part,
                val,
                seed_pool,
                mix_ratio=cfg.mix_seed_ratio if method == "seeded" else 0.0,
                progress=progress,
            )
            m = binary_metrics(
                y_held,
                predict_proba(
                    model, tok, texts_held, max_length=cfg.max_length, batch_size=cfg.eval_batch_size, bf16=cfg.bf16
                ),
            )
            rows.append(
                {
                    "method": method,
                    "n_labels": n,
                    "accuracy": m["accuracy"],
                    "roc_auc": m["roc_auc"],
                    "log_loss": m["log_loss"],
                    "epochs": len(res.evals),
                }
            )
            log.info("learning curve n=%d %s: accuracy %.3f", n, method, m["accuracy"] or float("nan"))
        for method, extra in (("tfidf seeded", list(seed_pool)), ("tfidf unseeded", [])):
            base = extra + list(sub)
            p = (
                TfidfBaseline(seed=cfg.random_seed)
                .fit([e.text for e in base], [e.label for e in base])
                .predict_proba(texts_held)
            )
            m = binary_metrics(y_held, p)
            rows.append(
                {
                    "method": method,
                    "n_labels": n,
                    "accuracy": m["accuracy"],
                    "roc_auc": m["roc_auc"],
                    "log_loss": m["log_loss"],
                }
            )
    return rows


# ----------------------------------------------------------------------------- model card


def model_card(run_id: str, cfg: RewardConfig, metrics: dict) -> str:
    c = metrics["counts"]
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-classification",
        "tags: [reward-model, rlhf]",
        "---",
        "",
        f"# Reward model `{run_id}`",
        "",
        "A two-label sequence classifier (NEGATIVE = bad, POSITIVE = good) that stands in for the human "
        "labellers during PPO. P(good) = softmax(logits)[1].",
        "",
    ]
    if metrics["seed_only"]:
        lines += [
            "**Seed-only model: no human labels were available.** It has learned IMDB sentiment "
            "(positive = good), not what your labellers want. Label completions (`make label`) and train again.",
            "",
        ]
    hp = metrics.get("human_phase") or {}
    if hp.get("best_epoch") == 0:
        lines += [
            "**The human phase did not beat the seed model on the validation labels (set aside from the "
            "training labels), so the seed weights were kept.**",
            "",
        ]
    sp = metrics["seed_phase"]
    lines += [
        "## Training",
        "",
        f"- backbone: `{sp.get('backbone', cfg.backbone_or_default)}`",
        f"- seed phase: {'skipped (IMDB-tuned backbone)' if sp.get('skipped') else str(sp.get('examples')) + ' IMDB snippets' + (' (cached)' if sp.get('cached') else '')}",
        f"- human labels: {c['human_total']['n']} usable ({c['human_total']['good']} good, {c['human_total']['bad']} bad; "
        f"combine = {metrics['combine']}); trained on {c['human_train']['n']}, held out {c['human_heldout']['n']} "
        "(stratified, grouped by completion, never trained on nor used to pick anything); "
        f"{(hp.get('validation') or {}).get('n', 0)} of the training labels set aside to pick the epoch",
        f"- seed snippets mixed into the human phase: {c['seed_mixed_into_human_phase']}",
        f"- preference pairs (Bradley-Terry, pairs = {cfg.pairs}, pair_weight = {cfg.pair_weight}): "
        f"{((metrics.get('pairs') or {}).get('counts') or {}).get('train', {}).get('n', 0)} trained on, "
        f"{((metrics.get('pairs') or {}).get('counts') or {}).get('heldout', {}).get('n', 0)} held out (grouped by prompt)",
        f"- ensemble: {(metrics.get('ensemble') or {}).get('size', 1)} {(metrics.get('ensemble') or {}).get('kind') or 'single model'} "
        "(this folder's own weights are member 0, or for heads their mean; `load_reward_fn` scores with the "
        "ensemble mean)",
        f"- held-out IMDB test-split snippets for evaluation: {c['imdb_eval_snippets']}",
        f"- texts truncated at {cfg.max_length} tokens; bf16 autocast: {use_bf16(cfg.bf16)} (asked: {cfg.bf16})",
        "",
        "## Evaluation (held out)",
        "",
        "| data | model | n | accuracy | ROC-AUC | log-loss | ECE |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("human_heldout", "imdb_snippets"):
        for who, label in (
            ("seed_model", "seed model (before human phase)"),
            ("model", "this model"),
            ("tfidf", "TF-IDF + LR baseline"),
        ):
            m = metrics.get(who, {}).get(name)
            if m:
                lines.append(
                    f"| {name} | {label} | {m['n']} | {fmt_number(m.get('accuracy'))} | {fmt_number(m.get('roc_auc'))} | "
                    f"{fmt_number(m.get('log_loss'))} | {fmt_number(m.get('ece'))} |"
                )
    pm = (metrics.get("pairs") or {}).get("model")
    if pm:
        sm = metrics["pairs"].get("seed_model") or {}
        lines += [
            "",
            f"Held-out preference pairs (n={pm['n']}, Bradley-Terry): pairwise accuracy {pm['accuracy']:.3f} "
            f"(95% CI {pm['ci95'][0]:.3f} to {pm['ci95'][1]:.3f})"
            + (f", seed model {sm['accuracy']:.3f}" if sm.get("accuracy") is not None else "")
            + f"; this model minus the seed model: {fmt_difference(metrics['pairs'].get('model_minus_seed'))}",
        ]
    diffs = metrics.get("model_minus_tfidf") or {}
    if any(diffs.values()):
        lines += [
            "",
            "Accuracy of this model minus the TF-IDF baseline on the same held-out examples "
            "(95% paired bootstrap interval):",
            "",
        ]
        lines += [f"- {name}: {fmt_difference(d)}" for name, d in diffs.items() if d]
    gain = (metrics.get("model_minus_seed") or {}).get("human_heldout")
    if gain:
        lines += [
            "",
            "What the human labels added, this model minus the seed model on the held-out human labels "
            f"(95% paired bootstrap interval): {fmt_difference(gain)}",
        ]
    lines += [
        "",
        "Plots: `calibration.png`, `training_loss.png`"
        + (", `learning_curve.png`" if metrics.get("learning_curve") else "")
        + "; all numbers in `metrics.json`.",
        "",
        "## Use",
        "",
        "```python",
        "from transformers import pipeline",
        'clf = pipeline("text-classification", model="path/to/this/folder")',
        "from reward_training import load_reward_fn, reward_model",
        'reward_fn = load_reward_fn("path/to/this/folder", kind="prob")   # list[str] -> torch.Tensor',
        'reward_model(["What a film."], path="path/to/this/folder")       # {text: P(good)}',
        "```",
        "",
    ]
    return "\n".join(lines)
