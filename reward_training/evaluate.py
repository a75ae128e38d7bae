"""Evaluation: accuracy, ROC-AUC, log-loss, calibration (ECE), the TF-IDF baseline, and plots."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.fmt import MISSING

log = logging.getLogger(__name__)

EPS = 1e-7


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> tuple[float, dict]:
    """ECE over ``n_bins`` equal-width bins of P(good): the count-weighted mean |accuracy - confidence|
    gap, here |mean label - mean P(good)| per bin. Also returns the curve (per non-empty bin)."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    curve = {"mean_predicted": [], "fraction_good": [], "count": []}
    for b in range(n_bins):
        mask = bins == b
        if not mask.any():
            continue
        conf, frac = float(p[mask].mean()), float(y[mask].mean())
        ece += mask.mean() * abs(frac - conf)
        curve["mean_predicted"].append(conf)
        curve["fraction_good"].append(frac)
        curve["count"].append(int(mask.sum()))
    return float(ece), curve


def binary_metrics(y: Sequence[float], p: Sequence[float]) -> dict:
    """Accuracy (P(good) > 0.5 vs label > 0.5), ROC-AUC, log-loss, ECE and the calibration curve.
    ``y`` may hold soft labels (fractions good): log-loss and ECE use them as they are."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    n = int(len(y))
    if n == 0:
        return {"n": 0}
    hard = y > 0.5
    decided = y != 0.5
    out: dict = {"n": n, "positive_share": float(hard.mean())}
    out["accuracy"] = float(((p > 0.5) == hard)[decided].mean()) if decided.any() else None
    both = decided.any() and 0 < hard[decided].sum() < decided.sum()
    out["roc_auc"] = float(roc_auc_score(hard[decided], p[decided])) if both else None
    out["log_loss"] = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    out["ece"], out["calibration"] = expected_calibration_error(y, p)
    return out


def accuracy_difference(
    y: Sequence[float], p_a: Sequence[float], p_b: Sequence[float], *, reps: int = 2000, seed: int = 0
) -> dict | None:
    """Accuracy of A minus accuracy of B on the same examples, in points, with a 95% paired
    bootstrap interval (the examples are resampled together, so what both get right or wrong
    cancels). ``None`` when no example has a decided (non-0.5) label.

    With n = 1,000 held-out labels and accuracies near 75%, the interval is roughly +-3 points:
    one run's gap of "+4" may well be +1 or +7.
    """
    y = np.asarray(y, dtype=float)
    decided = y != 0.5
    if not decided.any():
        return None
    hard = y[decided] > 0.5
    a = ((np.asarray(p_a, dtype=float)[decided] > 0.5) == hard).astype(float)
    b = ((np.asarray(p_b, dtype=float)[decided] > 0.5) == hard).astype(float)
    return points_with_interval(a - b, reps=reps, seed=seed)


def bootstrap_interval(values: np.ndarray, *, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The 95% percentile-bootstrap interval of the mean of ``values`` (resampled ``reps`` times)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // len(values))  # resampled indices held at once: ~32 MB whatever the size
    boot = np.concatenate(
        [
            values[rng.integers(0, len(values), size=(min(chunk, reps - i), len(values)))].mean(axis=1)
            for i in range(0, reps, chunk)
        ]
    )
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(lo), float(hi)


def points_with_interval(values: np.ndarray, *, reps: int = 2000, seed: int = 0) -> dict:
    """The mean of per-example values (1 right, 0 wrong, or differences of those) in points, with its 95%
    bootstrap interval."""
    lo, hi = bootstrap_interval(values, reps=reps, seed=seed)
    return {
        "points": round(100 * float(values.mean()), 2),
        "ci95": [round(100 * lo, 2), round(100 * hi, 2)],
        "n": int(len(values)),
    }


def pair_correct(s_chosen: Sequence[float], s_rejected: Sequence[float]) -> np.ndarray:
    """Per pair: 1 when the chosen text scores higher, 0.5 on a tie, 0 otherwise."""
    d = np.asarray(s_chosen, dtype=float) - np.asarray(s_rejected, dtype=float)
    return (d > 0) + 0.5 * (d == 0)


def pairwise_metrics(s_chosen: Sequence[float], s_rejected: Sequence[float], *, seed: int = 0) -> dict:
    """Pairwise accuracy (share of pairs whose chosen text scores higher, ties half) with a 95% bootstrap
    interval, and the Bradley-Terry log-loss -mean log sigmoid(s_chosen - s_rejected), on scores = logits
    of good minus bad."""
    if len(s_chosen) == 0:
        return {"n": 0}
    d = np.asarray(s_chosen, dtype=float) - np.asarray(s_rejected, dtype=float)
    acc = points_with_interval(pair_correct(s_chosen, s_rejected), seed=seed)
    return {
        "n": acc["n"],
        "accuracy": acc["points"] / 100,
        "ci95": [acc["ci95"][0] / 100, acc["ci95"][1] / 100],
        "bt_loss": float(np.mean(np.logaddexp(0.0, -d))),
    }


def pairwise_difference(
    a: tuple[Sequence[float], Sequence[float]], b: tuple[Sequence[float], Sequence[float]], *, seed: int = 0
) -> dict | None:
    """Pairwise accuracy of model A minus model B on the same pairs ((chosen, rejected) scores of each), in
    points with a 95% paired bootstrap interval; None without pairs."""
    if len(a[0]) == 0:
        return None
    return points_with_interval(pair_correct(*a) - pair_correct(*b), seed=seed)


def fmt_difference(d: dict | None) -> str:
    """'+4.9 points (95% CI +2.0 to +7.8, n=1000)' (each part when present) or '–'."""
    if not d or not isinstance(d.get("points"), (int, float)):
        return MISSING
    inside = []
    ci = d.get("ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        inside.append(f"95% CI {ci[0]:+.1f} to {ci[1]:+.1f}")
    if d.get("n") is not None:
        inside.append(f"n={d['n']}")
    return f"{d['points']:+.1f} points" + (f" ({', '.join(inside)})" if inside else "")


class TfidfBaseline:
    """TF-IDF (word 1-2-grams) + logistic regression, fitted on the same texts as the model."""

    def __init__(self, C: float = 4.0, seed: int = 0):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        self.pipe = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, strip_accents="unicode"),
            LogisticRegression(C=C, max_iter=2000, random_state=seed),
        )

    def fit(self, texts: Sequence[str], labels: Sequence[float]) -> TfidfBaseline:
        y = (np.asarray(labels, dtype=float) > 0.5).astype(int)
        self.pipe.fit(list(texts), y)
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros(0)
        return self.pipe.predict_proba(list(texts))[:, 1]


def short(m: dict) -> dict:
    """The headline numbers of a metrics dict (no curve), rounded for logs and cards."""
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items() if k != "calibration"}


# ----------------------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_calibration(path: Path, curves: dict[str, dict]) -> None:
    """One reliability diagram; ``curves`` maps a legend name to a metrics dict with ``calibration``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect")
    for name, m in curves.items():
        cal = m.get("calibration") if m else None
        if not cal or not cal["count"]:
            continue
        ax.plot(
            cal["mean_predicted"], cal["fraction_good"], marker="o", label=f"{name} (ECE {m['ece']:.3f}, n={m['n']})"
        )
    ax.set_xlabel("predicted P(good)")
    ax.set_ylabel("fraction labelled good")
    ax.set_title("Calibration on held-out data")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_losses(path: Path, phases: dict[str, list[float]]) -> None:
    """Training loss per step for each phase (smoothed over 20 steps)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    offset = 0
    for name, losses in phases.items():
        if not losses:
            continue
        k = min(20, len(losses))
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(len(smooth)) + offset + k - 1, smooth, label=name)
        offset += len(losses)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("cross-entropy")
    ax.set_title("Reward-model training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_learning_curve(path: Path, rows: list[dict]) -> None:
    """Held-out human accuracy vs number of human labels, one line per method."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in sorted({r["method"] for r in rows}):
        pts = sorted(
            (r["n_labels"], r["accuracy"]) for r in rows if r["method"] == method and r["accuracy"] is not None
        )
        if pts:
            ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("human labels used for training")
    ax.set_ylabel("accuracy on held-out human labels")
    ax.set_title("Learning curve")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
