"""Labeller reliability: binary Dawid–Skene, fitted by EM on the overlapping good/bad judgements.

Pure (numpy only, no torch), so the labelling app's stats page can use it too.

Each labeller ``j`` has a sensitivity ``s_j = P(says good | item is good)`` and a specificity
``t_j = P(says bad | item is bad)``; items are good with prevalence ``pi``. EM alternates:

- E-step: the posterior P(good) of each item from the labels on it,
  ``log-odds = logit(pi) + sum_j [log s_j - log(1 - t_j)]`` for a good label and
  ``[log(1 - s_j) - log t_j]`` for a bad one;
- M-step: ``s_j``, ``t_j`` and ``pi`` as posterior-weighted counts, each smoothed by a Beta prior of
  ``prior`` = (correct, wrong) pseudo-counts (default (2, 1), i.e. a prior accuracy of 2/3).

It starts from the plain vote share. Only *overlapping* items (judged good/bad by two or more
labellers) enter the M-step: an item seen by one labeller only says nothing about that labeller
and would just confirm them. A labeller with labels but no overlapping item has reliability
``None`` ("unknown") and keeps the **default weight**: sensitivity = specificity = the prior mean
(2/3 by default), which is how their labels count in the posterior of the items they judged.
``accuracy`` is ``pi * s + (1 - pi) * t``, the share of items a labeller gets right.

Skips (and any label other than good/bad, 1/0) are ignored; when a labeller judged the same item
twice the last judgement counts.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import numpy as np

GOOD = {"good", 1}  # 1 == 1.0 == True
BAD = {"bad", 0}  # 0 == 0.0 == False


@dataclass(frozen=True)
class LabellerReliability:
    """One labeller's estimate; the three rates are None ("unknown") without overlapping items."""

    labeller: Hashable
    n_labels: int  # good/bad judgements
    n_shared: int  # of those, on items someone else also judged good/bad
    sensitivity: float | None
    specificity: float | None
    accuracy: float | None


@dataclass(frozen=True)
class Reliability:
    labellers: dict[Hashable, LabellerReliability]
    posterior: dict[Hashable, float]  # P(good) per item
    prevalence: float
    iterations: int
    default_accuracy: float  # the weight of an 'unknown' labeller (sensitivity = specificity)


def _binary(label) -> int | None:
    if isinstance(label, str):
        label = label.strip().lower()
    if label in GOOD:
        return 1
    if label in BAD:
        return 0
    return None


def dawid_skene(
    judgements: Iterable[tuple[Hashable, Hashable, object]],
    *,
    iterations: int = 50,
    tol: float = 1e-6,
    prior: tuple[float, float] = (2.0, 1.0),
) -> Reliability:
    """Fit binary Dawid–Skene to ``(item, labeller, label)`` triples (label 'good'/'bad'/'skip' or 1/0).

    Returns each labeller's reliability and every judged item's posterior P(good). ``prior`` is the
    (correct, wrong) pseudo-count added to each labeller's sensitivity and specificity counts.
    """
    a, b = (float(x) for x in prior)
    if a <= 0 or b <= 0:
        raise ValueError(f"prior={prior!r}: both pseudo-counts must be positive.")
    default = a / (a + b)

    latest: dict[tuple[Hashable, Hashable], int] = {}
    for item, who, label in judgements:
        y = _binary(label)
        if y is not None:
            latest[(item, who)] = y
    items = sorted({i for i, _ in latest}, key=repr)
    people = sorted({w for _, w in latest}, key=repr)
    ii = {x: k for k, x in enumerate(items)}
    jj = {x: k for k, x in enumerate(people)}
    rows = np.array([ii[i] for i, _ in latest], dtype=int)
    cols = np.array([jj[w] for _, w in latest], dtype=int)
    ys = np.array(list(latest.values()), dtype=float)

    per_item = np.bincount(rows, minlength=len(items)) if len(rows) else np.zeros(0, int)
    shared = per_item[rows] >= 2 if len(rows) else np.zeros(0, bool)
    n_labels = np.bincount(cols, minlength=len(people)) if len(cols) else np.zeros(0, int)
    n_shared = np.bincount(cols[shared], minlength=len(people)) if len(cols) else np.zeros(0, int)
    known = n_shared > 0

    # start: the vote share of each item
    goods = np.bincount(rows, weights=ys, minlength=len(items)) if len(rows) else np.zeros(0)
    q = np.divide(goods, per_item, out=np.full(len(items), 0.5), where=per_item > 0)
    sens = np.full(len(people), default)
    spec = np.full(len(people), default)
    pi = _prevalence(q, per_item >= 2, goods, per_item)
    done = 0
    for step in range(1, iterations + 1):
        done = step
        # M-step on the overlapping judgements
        if shared.any():
            r, c, y = rows[shared], cols[shared], ys[shared]
            w_good = q[r]
            tp = np.bincount(c, weights=w_good * y, minlength=len(people))
            pos = np.bincount(c, weights=w_good, minlength=len(people))
            tn = np.bincount(c, weights=(1 - w_good) * (1 - y), minlength=len(people))
            neg = np.bincount(c, weights=1 - w_good, minlength=len(people))
            sens = np.where(known, (tp + a) / (pos + a + b), default)
            spec = np.where(known, (tn + a) / (neg + a + b), default)
        pi = _prevalence(q, per_item >= 2, goods, per_item)
        # E-step on every item
        new = _posterior(rows, cols, ys, sens, spec, pi, len(items))
        change = float(np.max(np.abs(new - q))) if len(q) else 0.0
        q = new
        if change < tol:
            break

    out = {}
    for k, who in enumerate(people):
        ok = bool(known[k])
        out[who] = LabellerReliability(
            labeller=who,
            n_labels=int(n_labels[k]),
            n_shared=int(n_shared[k]),
            sensitivity=float(sens[k]) if ok else None,
            specificity=float(spec[k]) if ok else None,
            accuracy=float(pi * sens[k] + (1 - pi) * spec[k]) if ok else None,
        )
    return Reliability(
        labellers=out,
        posterior={x: float(q[k]) for k, x in enumerate(items)},
        prevalence=float(pi),
        iterations=done,
        default_accuracy=default,
    )


def _prevalence(q: np.ndarray, overlap: np.ndarray, goods: np.ndarray, per_item: np.ndarray) -> float:
    """P(good) over the overlapping items' posteriors, else the share of good labels (Beta(1, 1) smoothed)."""
    if overlap.any():
        return float((q[overlap].sum() + 1.0) / (overlap.sum() + 2.0))
    return float((goods.sum() + 1.0) / (per_item.sum() + 2.0))


def _posterior(rows, cols, ys, sens, spec, pi, n_items) -> np.ndarray:
    eps = 1e-6
    s = np.clip(sens, eps, 1 - eps)
    t = np.clip(spec, eps, 1 - eps)
    good_w = np.log(s) - np.log(1 - t)  # a 'good' label's log-likelihood ratio
    bad_w = np.log(1 - s) - np.log(t)  # a 'bad' one's
    contrib = np.where(ys == 1, good_w[cols], bad_w[cols]) if len(rows) else np.zeros(0)
    logit = np.log(pi) - np.log(1 - pi) + np.bincount(rows, weights=contrib, minlength=n_items)
    return 1.0 / (1.0 + np.exp(-logit))
