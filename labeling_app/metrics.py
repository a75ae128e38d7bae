"""Numbers for the stats page, as pure functions of ``db.judgements_frame(engine)``.

The frame has one row per judgement with at least the columns ``completion_id``, ``labeler``,
``label`` ('good'|'bad'|'skip') and ``created_at``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd


def per_labeller(frame: pd.DataFrame) -> pd.DataFrame:
    """Counts per labeller: judgements, good, bad, skip, good rate (of good+bad), labels per hour.

    Labels per hour is judgements divided by the labeller's active time, the span from their
    first to their last judgement (at least one minute, so a short burst is not extrapolated).
    """
    cols = ["labeller", "judgements", "good", "bad", "skip", "good_rate", "labels_per_hour", "median_seconds"]
    if frame.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for name, g in frame.groupby("labeler", sort=True):
        counts = g["label"].value_counts()
        good, bad, skip = (int(counts.get(k, 0)) for k in ("good", "bad", "skip"))
        span_h = max((g["created_at"].max() - g["created_at"].min()).total_seconds(), 60.0) / 3600.0
        seconds = g["seconds"].dropna() if "seconds" in g else pd.Series(dtype=float)
        rows.append(
            {
                "labeller": name,
                "judgements": len(g),
                "good": good,
                "bad": bad,
                "skip": skip,
                "good_rate": round(good / (good + bad), 3) if good + bad else np.nan,
                "labels_per_hour": round(len(g) / span_h, 1),
                "median_seconds": round(float(seconds.median()), 2) if len(seconds) else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=cols).sort_values("judgements", ascending=False, ignore_index=True)


def labeller_reliability(frame: pd.DataFrame) -> pd.DataFrame:
    """Each labeller's Dawid–Skene accuracy from the items they share with others (skips left out).

    ``reliability`` is text: the estimated accuracy to two decimals, or "unknown" for a labeller
    with no good/bad judgement on an item someone else also judged (see ``reward_training.reliability``).
    """
    from reward_training.reliability import dawid_skene  # numpy only: no torch in the app

    cols = ["labeller", "shared_items", "reliability"]
    if frame.empty:
        return pd.DataFrame(columns=cols)
    rel = dawid_skene(zip(frame["completion_id"], frame["labeler"], frame["label"]))
    rows = [
        {
            "labeller": name,
            "shared_items": rel.labellers[name].n_shared if name in rel.labellers else 0,
            "reliability": "unknown"
            if name not in rel.labellers or rel.labellers[name].accuracy is None
            else f"{rel.labellers[name].accuracy:.2f}",
        }
        for name in sorted(frame["labeler"].unique())
    ]
    return pd.DataFrame(rows, columns=cols)


def labels_over_time(frame: pd.DataFrame, bins: int = 60) -> pd.DataFrame:
    """Cumulative judgements per labeller over time (one column per labeller), for a line chart.

    Time is cut into about ``bins`` equal steps of whole seconds between the first and the last
    judgement, so a short session and a month of labelling both give a readable curve.
    """
    if frame.empty:
        return pd.DataFrame()
    start, end = frame["created_at"].min(), frame["created_at"].max()
    step = max(int((end - start).total_seconds() // bins), 1)
    t = start.floor(f"{step}s")
    index = pd.date_range(t, end.floor(f"{step}s") + pd.Timedelta(seconds=step), freq=f"{step}s")
    binned = frame.assign(t=frame["created_at"].dt.floor(f"{step}s"))
    table = binned.pivot_table(index="t", columns="labeler", values="label", aggfunc="count", fill_value=0)
    table = table.reindex(index, fill_value=0)
    table.columns.name = None
    table.index.name = "time"
    return table.cumsum()


def pairwise_kappa(frame: pd.DataFrame, min_items: int = 2) -> pd.DataFrame:
    """Cohen's kappa for every pair of labellers on the items both judged good or bad.

    Skips are left out. Kappa is NaN when there are fewer than ``min_items`` shared items or
    when both labellers gave a single identical label to everything (kappa is undefined there).
    """
    from sklearn.metrics import cohen_kappa_score

    cols = ["labeller_a", "labeller_b", "shared_items", "agreement", "kappa"]
    judged = frame[frame["label"].isin(["good", "bad"])]
    if judged.empty:
        return pd.DataFrame(columns=cols)
    wide = judged.pivot_table(index="completion_id", columns="labeler", values="label", aggfunc="last")
    rows = []
    for a, b in itertools.combinations(sorted(wide.columns), 2):
        both = wide[[a, b]].dropna()
        n = len(both)
        if n == 0:
            continue
        agreement = float((both[a] == both[b]).mean())
        kappa = np.nan
        if n >= min_items and len(set(both[a]) | set(both[b])) > 1:
            kappa = float(cohen_kappa_score(both[a], both[b], labels=["good", "bad"]))
        rows.append(
            {
                "labeller_a": a,
                "labeller_b": b,
                "shared_items": n,
                "agreement": round(agreement, 3),
                "kappa": round(kappa, 3) if not np.isnan(kappa) else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=cols)


def mean_kappa(pairs: pd.DataFrame) -> float | None:
    """The shared-item-weighted mean kappa over labeller pairs, or None when no pair has one."""
    ok = pairs.dropna(subset=["kappa"])
    if ok.empty:
        return None
    return float(np.average(ok["kappa"], weights=ok["shared_items"]))


ACCURACY_KEYS = (
    "human_accuracy",
    "accuracy_human",
    "eval_accuracy_human",
    "accuracy",
    "eval_accuracy",
    "val_accuracy",
    "test_accuracy",
)


def reward_accuracy(versions) -> pd.DataFrame:
    """Accuracy of each registered reward model (from its metrics), oldest first.

    Takes ``db.list_model_versions(engine, 'reward')``; uses the first accuracy-like key found in
    each version's metrics (human-label accuracy preferred) and the ROC-AUC when present.
    """
    rows = []
    for v in versions:
        metrics = getattr(v, "metrics", None) or {}
        flat = _flatten(metrics)
        key = next((k for k in ACCURACY_KEYS if isinstance(flat.get(k), (int, float))), None)
        if key is None:
            key = next((k for k, x in flat.items() if "acc" in k.lower() and isinstance(x, (int, float))), None)
        auc = next((x for k, x in flat.items() if "auc" in k.lower() and isinstance(x, (int, float))), None)
        rows.append(
            {
                "created_at": v.created_at,
                "name": v.name,
                "metric": key,
                "accuracy": float(flat[key]) if key else np.nan,
                "roc_auc": float(auc) if auc is not None else np.nan,
                **_against_tfidf(flat, key),
            }
        )
    frame = pd.DataFrame(
        rows, columns=["created_at", "name", "metric", "accuracy", "roc_auc", "tfidf_accuracy", "vs_tfidf"]
    )
    return frame.sort_values("created_at", ignore_index=True) if not frame.empty else frame


def _against_tfidf(flat: dict, key: str | None) -> dict:
    """The TF-IDF baseline's accuracy on the same held-out set as ``key`` (``model/<set>/accuracy``,
    as ``reward_training`` registers it) and the difference with its 95% interval, as text."""
    parts = key.split("/") if key else []
    where = parts[1] if len(parts) == 3 and parts[0] == "model" else None
    from reward_training.evaluate import fmt_difference  # numpy only: no torch in the app

    base = flat.get(f"tfidf/{where}/accuracy")
    diff = {
        "points": flat.get(f"model_minus_tfidf/{where}/points"),
        "ci95": flat.get(f"model_minus_tfidf/{where}/ci95"),
    }
    text = fmt_difference(diff) if isinstance(diff["points"], (int, float)) else ""
    return {"tfidf_accuracy": float(base) if isinstance(base, (int, float)) else np.nan, "vs_tfidf": text}


def _flatten(d: dict, prefix: str = "") -> dict:
    """Nested metrics as ``{"a.b": x}``, plus each leaf under its own name when not taken."""
    out: dict = {}
    leaves: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            for kk, vv in _flatten(v, f"{prefix}{k}.").items():
                out[kk] = vv
                leaves.setdefault(kk.rsplit(".", 1)[-1], vv)
        else:
            out[f"{prefix}{k}"] = v
    for k, v in leaves.items():
        out.setdefault(k, v)
    return out
