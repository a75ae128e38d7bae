"""The numbers, the table and the plots of a compare run, as pure functions of each method's result.

A :class:`MethodResult` holds one method's eval points over its run (the eval columns of PPO's metrics rows:
``eval/gold``, ``eval/gold_positive``, ``eval/kl``, ``eval/reward``, ``eval/p_good``, ``eval/distinct_2``, plus
``step`` and ``elapsed_s``), its final held-out samples, and the figures around them. Everything else here
turns a list of them into ``compare.json``, ``report.md``, ``frontier.png`` and ``gold_vs_time.png``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: z of a two-sided 95% interval.
Z95 = 1.959964


@dataclass
class MethodResult:
    method: str
    status: str = "ok"  # ok | skipped
    reason: str = ""  # why it was skipped
    evals: list[dict] = field(default_factory=list)  # eval rows over the run, first to last
    samples: list[dict] = field(default_factory=list)  # the final eval's samples: prompt, response, every score
    wall_s: float = 0.0  # training seconds (evaluation not counted)
    labels_used: int | None = None
    fluency_nll: float | None = None  # mean NLL per token of the final samples under the start policy
    budget_s: float | None = None
    analytic_kl: bool = False  # best-of-n: eval/kl is log n - (n - 1) / n, not sampled

    @property
    def final(self) -> dict:
        return self.evals[-1] if self.evals else {}


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval of a rate ``successes / n`` (``(nan, nan)`` when ``n`` is 0)."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def gold_rate(samples: list[dict]) -> tuple[float, float, float, int]:
    """(gold positive rate, 95% low, 95% high, n) of the samples' gold scores (``report.gold_hits``)."""
    from rl_finetune.ppo.report import gold_hits

    hits = gold_hits(samples)
    if not hits:
        return math.nan, math.nan, math.nan, 0
    lo, hi = wilson_interval(sum(hits), len(hits))
    return sum(hits) / len(hits), lo, hi, len(hits)


def summary_row(r: MethodResult) -> dict:
    """The table's row of one method (NaN where it has no number)."""
    rate, lo, hi, n = gold_rate(r.samples)
    f = r.final
    nan = math.nan
    return {
        "method": r.method,
        "status": r.status if r.status != "skipped" else f"skipped: {r.reason}",
        "gold_rate": rate,
        "gold_ci95": [lo, hi],
        "n_prompts": n,
        "gold_mean": f.get("eval/gold", nan),
        "reward": f.get("eval/reward", nan),
        "p_good": f.get("eval/p_good", nan),
        "kl": f.get("eval/kl", nan),
        "distinct_2": f.get("eval/distinct_2", nan),
        "fluency_nll": r.fluency_nll if r.fluency_nll is not None else nan,
        "wall_s": r.wall_s if r.status == "ok" else nan,
        "labels_used": r.labels_used,
    }


def first_reaching(r: MethodResult, target: float) -> dict | None:
    """The first eval point of ``r`` whose gold positive rate is at least ``target`` (None: it never got there)."""
    for row in r.evals:
        if row.get("eval/gold_positive", -1.0) >= target:
            return row
    return None


def winners(results: list[MethodResult], target: float) -> dict:
    """Which method reaches gold positive rate >= ``target`` at the lowest KL, and which in the least wall time.

    Every eval point counts (a method may reach the target mid-run at a lower KL than its end); a point is
    ``(method, kl, elapsed_s)``. ``{"lowest_kl": None, ...}`` when no method got there."""
    points = []
    for r in results:
        if r.status != "ok" or r.method == "start":
            continue
        for row in r.evals:
            if row.get("eval/gold_positive", -1.0) >= target:
                points.append({"method": r.method, "kl": row["eval/kl"], "elapsed_s": row.get("elapsed_s", 0.0)})
    if not points:
        return {"target": target, "lowest_kl": None, "least_time": None}
    return {
        "target": target,
        "lowest_kl": min(points, key=lambda p: (p["kl"], p["elapsed_s"])),
        "least_time": min(points, key=lambda p: (p["elapsed_s"], p["kl"])),
    }


def compare_json(results: list[MethodResult], target: float, meta: dict) -> dict:
    """Everything ``compare.json`` holds: the run's settings, the table, the winners and each method's evals
    (NaN written as null, so that any JSON reader takes the file)."""
    return json_safe(
        {
            **meta,
            "table": [summary_row(r) for r in results],
            "winners": winners(results, target),
            "methods": {r.method: {k: v for k, v in asdict(r).items() if k != "samples"} for r in results},
            "samples": {r.method: r.samples for r in results},
        }
    )


def json_safe(x):
    """``x`` with every NaN or infinity replaced by None, recursively."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


# ------------------------------------------------------------------ report.md


def _f(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def verdict(w: dict) -> str:
    """The report's sentence on which method reached the target gold rate at the lowest KL and in the least time."""
    t = w["target"]
    if w["lowest_kl"] is None:
        return f"No method reached a gold positive rate of {t:.2f} on the held-out prompts."
    k, s = w["lowest_kl"], w["least_time"]
    return (
        f"Gold positive rate ≥ {t:.2f}: at the lowest KL, **{k['method']}** ({k['kl']:.3f} nats, "
        f"after {k['elapsed_s']:.0f} s); in the least wall time, **{s['method']}** "
        f"({s['elapsed_s']:.0f} s, at KL {s['kl']:.3f})."
    )


def report_markdown(results: list[MethodResult], target: float, meta: dict) -> str:
    """``report.md``: what was compared, the table, the verdict and how to read the plots."""
    lines = ["# Stage-3 learners on one frontier", ""]
    lines.append(
        f"Start policy `{meta.get('policy')}`, reward model `{meta.get('reward')}`, "
        f"{meta.get('n_eval_prompts')} held-out prompts, budget {meta.get('seconds')} s per method, seed {meta.get('seed')}."
    )
    lines += ["", verdict(winners(results, target)), ""]
    lines.append(
        "| method | gold positive rate (95% interval) | gold mean | reward | P(good) | KL to start (nats) "
        "| distinct-2 | fluency NLL | wall time (s) | labels used | status |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        row = summary_row(r)
        lo, hi = row["gold_ci95"]
        gold = f"{_f(row['gold_rate'])} ({_f(lo)}–{_f(hi)})" if row["n_prompts"] else "–"
        kl = _f(row["kl"]) + (" (analytic)" if r.analytic_kl and r.status == "ok" else "")
        lines.append(
            f"| {r.method} | {gold} | {_f(row['gold_mean'])} | {_f(row['reward'])} | {_f(row['p_good'])} | {kl} "
            f"| {_f(row['distinct_2'])} | {_f(row['fluency_nll'], 2)} | {_f(row['wall_s'], 1)} "
            f"| {_f(row['labels_used'])} | {row['status']} |"
        )
    lines += [
        "",
        "- **gold positive rate**: the share of held-out prompts whose completion the gold judge scores above 0.5, "
        "with Wilson's 95% interval over the prompts. **reward**: the learned reward model's score (PPO's reward).",
        "- **KL to start**: the sampled KL to the start policy per completion (best-of-n: the analytic "
        "log n − (n − 1)/n). **fluency NLL**: nats per token of the completions under the start policy.",
        "- **wall time**: training seconds within the method's budget (evaluation not counted); best-of-n: "
        "sampling and scoring its n candidates. **labels used**: good/bad judgements behind the reward model "
        "(RL methods, best-of-n) or fed to the learner (KTO: labelled completions, DPO: preference pairs).",
        "",
        "![gold vs KL](frontier.png)",
        "",
        "![gold vs wall time](gold_vs_time.png)",
        "",
        "The frontier plot shows each method's eval points over its run, joined in order (the first point is "
        "the start policy); best-of-n is its analytic-KL curve over n. Up and to the left is better.",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------ plots


def _points(r: MethodResult, x_key: str) -> tuple[list[float], list[float]]:
    pts = [(row.get(x_key, 0.0), row["eval/gold_positive"]) for row in r.evals if "eval/gold_positive" in row]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_frontier(results: list[MethodResult], target: float, path: Path) -> Path:
    """``frontier.png``: gold positive rate vs KL to the start policy, one line per method over its run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for r in results:
        if r.method == "start":  # the start policy: where every line begins
            xs, ys = _points(r, "eval/kl")
            ax.plot(xs, ys, linestyle="none", marker="*", markersize=12, color="black", label="start policy")
        if r.status != "ok" or r.method == "start":
            continue
        xs, ys = _points(r, "eval/kl")
        style = dict(linestyle="--", marker="s") if r.analytic_kl else dict(marker="o")
        ax.plot(xs, ys, markersize=4, label=r.method + (" (analytic KL)" if r.analytic_kl else ""), **style)
        if r.analytic_kl:
            for row in r.evals:
                ax.annotate(f"n={int(row['eval/best_of_n'])}", (row["eval/kl"], row["eval/gold_positive"]), fontsize=7)
    ax.axhline(target, color="grey", linewidth=0.8, linestyle=":", label=f"target {target:.2f}")
    ax.set_xlabel("KL to the start policy (nats per completion)")
    ax.set_ylabel("gold positive rate (held-out prompts)")
    ax.set_title("gold vs KL: every stage-3 learner")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_gold_vs_time(results: list[MethodResult], target: float, path: Path) -> Path:
    """``gold_vs_time.png``: gold positive rate vs training seconds, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for r in results:
        if r.status != "ok" or r.method == "start":
            continue
        xs, ys = _points(r, "elapsed_s")
        ax.plot(xs, ys, marker="s" if r.analytic_kl else "o", markersize=4, label=r.method)
    ax.axhline(target, color="grey", linewidth=0.8, linestyle=":", label=f"target {target:.2f}")
    ax.set_xlabel("wall time (s of training; best-of-n: of sampling n candidates)")
    ax.set_ylabel("gold positive rate (held-out prompts)")
    ax.set_title("gold vs wall time")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
