"""Reports of a PPO run: the metrics of a step and of an eval, phase timers, the metrics.jsonl log,
the summary, PNG plots, and samples.md (before/after for the same prompts).

The metric functions are pure: the trainer hands them tensors and floats already averaged over
processes, and they return the rows that go to metrics.jsonl.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from rl_finetune.ppo import core
from rl_finetune.ppo.core import distinct_n
from rl_finetune.ppo.rollout import LogprobsAndValues

log = logging.getLogger(__name__)
TIMED_PHASES = ("rollout", "reward", "forward", "optimise")  # -> time/rollout, ...


class Timer:
    """Wall time per phase of one step: ``with timer("rollout"): ...`` adds to ``timer.seconds["rollout"]``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

    def total(self) -> float:
        """Seconds since the timer was made."""
        return time.perf_counter() - self.start


# ------------------------------------------------------------------ metrics of a step


def mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    """Key-wise mean of the per-minibatch stats (every row has the same keys)."""
    sums: dict[str, float] = {}
    for row in rows:
        for k, v in row.items():
            sums[k] = sums.get(k, 0.0) + v
    return {k: v / max(len(rows), 1) for k, v in sums.items()}


def rollout_stats(old: LogprobsAndValues, returns: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """This process's statistics of the rollout before the updates (k3 KL per sample, entropy, length, values)."""
    return {
        "kl_k3": (core.kl_per_token(old.logprobs, old.ref_logprobs, "k3") * mask).sum(-1).mean().item(),
        "entropy": core.masked_mean(old.entropy, mask).item(),
        "response_len": mask.sum(-1).mean().item(),
        "value_mean": core.masked_mean(old.values, mask).item(),
        "explained_variance": core.explained_variance(old.values, returns, mask),
    }


def step_metrics(
    step: int, scores: torch.Tensor, kl: float, kl_coef: float, stats: dict[str, float], timer: Timer, episodes: int
) -> dict:
    """The metrics.jsonl row of PPO step ``step`` (0-based; the row says ``step + 1``, the number of updates done).

    ``scores``: the raw scores of every process's rollout; ``kl``: mean KL per sample (the KL controller's
    input); ``kl_coef``: the coefficient the rewards used; ``stats``: :func:`rollout_stats` and the PPO
    update's stats, averaged over processes; ``episodes``: episodes of all processes in the step.
    """
    dt = timer.total()
    return {
        "step": step + 1,
        "reward_mean": scores.mean().item(),
        "reward_std": scores.std().item() if scores.numel() > 1 else 0.0,
        "kl": kl,
        "kl_coef": kl_coef,
        **stats,
        "samples_per_s": episodes / dt,
        "step_time": dt,
        # rollout = sampling + reward_fn; forward = old log-probs, values, reference log-probs;
        # optimise = ppo_epochs of forward + backward + step
        **{f"time/{phase}": timer.seconds.get(phase, 0.0) for phase in TIMED_PHASES},
    }


#: A gold score above this counts as a positive (:meth:`common.gold.GoldJudge.labels`): ``eval/gold_positive``,
#: compare's interval and the offline learners' evaluation count those.
GOLD_POSITIVE = 0.5


def gold_hits(samples: list[dict]) -> list[float]:
    """1.0 for each sample the gold judge calls good (score > :data:`GOLD_POSITIVE`), 0.0 for the others;
    samples without a gold score are left out."""
    return [float(s["gold"] > GOLD_POSITIVE) for s in samples if s.get("gold") is not None]


def eval_metrics(kls: list[float], samples: list[dict]) -> dict:
    """The eval columns of a metrics row: mean KL per sample, distinct-2, with the gold judge the share of
    samples it calls good (``eval/gold_positive``, the positive rate the demo and compare report), and the
    mean of every score."""
    row = {"eval/kl": float(np.mean(kls)), "eval/distinct_2": distinct_n([s["response"] for s in samples])}
    if hits := gold_hits(samples):
        row["eval/gold_positive"] = float(np.mean(hits))
    for key in samples[0]:
        if key not in ("prompt", "response"):
            row[f"eval/{key}"] = float(np.mean([s[key] for s in samples]))
    return row


def summarise(rows: list[dict], steps: int, elapsed: float, processes: int, start_policy: str | None) -> dict:
    """summary.json: speed, and the first and last value of every eval metric and of the train reward."""
    train_rows = [r for r in rows if "reward_mean" in r]
    evals = [r for r in rows if "eval/reward" in r]
    s = {
        "steps": steps,
        "wall_time_s": elapsed,
        "samples_per_s": (float(np.mean([r["samples_per_s"] for r in train_rows])) if train_rows else None),
        "s_per_step": (float(np.mean([r["step_time"] for r in train_rows])) if train_rows else None),
        "processes": processes,
        "start_policy": start_policy,
    }
    if evals:
        first, last = evals[0], evals[-1]
        for k in first:
            if k.startswith("eval/"):
                s[f"{k}_before"], s[f"{k}_after"] = first[k], last.get(k)
    if train_rows:
        s["train_reward_first"], s["train_reward_last"] = train_rows[0]["reward_mean"], train_rows[-1]["reward_mean"]
    return s


# ------------------------------------------------------------------ files


class MetricsLog:
    """The run's metric rows, in memory and appended to ``path`` (metrics.jsonl) as they come.

    ``resume_at=None`` starts afresh (an old file is removed); ``resume_at=step`` keeps the rows up to
    that step (a resumed run drops what came after its checkpoint). ``write=False`` (not the main
    process) keeps the rows in memory only; otherwise the folder of ``path`` is created. Each recorded row
    also goes to ``tracker`` (a :class:`common.tracking.Tracker`, e.g. TensorBoard) when given."""

    def __init__(self, path: Path | None, *, write: bool, resume_at: int | None, tracker=None):
        self.path = path if write else None
        self.tracker = tracker
        self.rows: list[dict] = []
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_at is not None and path is not None:
            self.rows = [r for r in read_jsonl(path) if r["step"] <= resume_at]
            if self.path is not None and self.path.exists():
                self.path.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        elif self.path is not None and self.path.exists():
            self.path.unlink()

    def record(self, row: dict) -> None:
        self.rows.append(row)
        if self.path is not None:
            append_jsonl(self.path, row)
        if self.tracker is not None:
            self.tracker.log(row, row["step"])

    def close(self) -> None:
        """Close the tracker (the rows stay readable)."""
        if self.tracker is not None:
            self.tracker.close()


class ProgressBar:
    """A tqdm bar over the PPO steps showing reward, KL and the last eval reward (off: does nothing)."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="ppo", dynamic_ncols=True)

    def update(self, row: dict) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(
                reward=f"{row['reward_mean']:.3f}",
                kl=f"{row['kl']:.2f}",
                **({"eval": f"{row['eval/reward']:.3f}"} if "eval/reward" in row else {}),
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def write_reports(
    work_dir: Path, rows: list[dict], before: list[dict], after: list[dict], summary: dict, config: dict, n: int
) -> None:
    """summary.json, ppo_config.json, the plots and (with eval samples) samples.md with ``n`` prompts."""
    from common.paths import write_json

    write_json(work_dir / "summary.json", summary)
    write_json(work_dir / "ppo_config.json", config)
    try:
        plot_metrics(rows, work_dir)
    except Exception as err:  # a plot must never lose a trained policy
        log.warning("could not draw the plots: %s", err)
    if before and after:
        (work_dir / "samples.md").write_text(samples_markdown(before, after, n), encoding="utf-8")


def append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, default=_jsonable) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _jsonable(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            xs.append(r["step"])
            ys.append(v)
    return xs, ys


def plot_metrics(rows: list[dict], out_dir: Path) -> list[Path]:
    """``reward_kl.png`` (reward and KL vs step) and ``reward_vs_kl.png`` (the eval frontier)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    paths = []
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for key, label in (
        ("reward_mean", "train reward (raw score)"),
        ("eval/reward", "eval reward"),
        ("eval/p_good", "eval P(good)"),
        ("eval/gold", "eval gold score"),
    ):
        xs, ys = _series(rows, key)
        if xs:
            ax1.plot(xs, ys, label=label, marker="o" if key.startswith("eval") else None, markersize=3)
    ax1.set_ylabel("reward")
    ax1.legend(loc="best", fontsize=8)
    ax1.grid(alpha=0.3)
    for key, label in (("kl", "train KL (nats/sample)"), ("eval/kl", "eval KL")):
        xs, ys = _series(rows, key)
        if xs:
            ax2.plot(xs, ys, label=label, marker="o" if key.startswith("eval") else None, markersize=3)
    ax2.set_xlabel("PPO step")
    ax2.set_ylabel("KL to reference")
    ax2.legend(loc="best", fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(out_dir / "reward_kl.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    evals = [r for r in rows if r.get("eval/kl") is not None]
    for key, label in (("eval/reward", "reward"), ("eval/p_good", "P(good)"), ("eval/gold", "gold score")):
        pts = [(r["eval/kl"], r[key]) for r in evals if r.get(key) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=label)
    ax.set_xlabel("KL to reference (nats per sample, eval prompts)")
    ax.set_ylabel("score on eval prompts")
    ax.set_title("reward vs KL")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(out_dir / "reward_vs_kl.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def samples_markdown(before: list[dict], after: list[dict], n: int, title: str = "PPO samples") -> str:
    """A before/after table for the same eval prompts, plus distinct-2 and mean scores of all eval samples.

    Each sample is ``{"prompt", "response", "reward", optional "p_good"/"gold"}``.
    """

    def mean(rows, key):
        vals = [r[key] for r in rows if r.get(key) is not None]
        return sum(vals) / len(vals) if vals else float("nan")

    lines = [f"# {title}", ""]
    lines.append("| | before | after |")
    lines.append("|---|---|---|")
    for key in ("reward", "p_good", "gold"):
        if any(r.get(key) is not None for r in before + after):
            lines.append(f"| mean {key} | {mean(before, key):.3f} | {mean(after, key):.3f} |")
    lines.append(
        f"| distinct-2 | {distinct_n([r['response'] for r in before]):.3f} | "
        f"{distinct_n([r['response'] for r in after]):.3f} |"
    )
    lines.append(f"| eval samples | {len(before)} | {len(after)} |")
    lines += [
        "",
        "Sampled from the full distribution (top_k=0, top_p=1) for the same prompts before and after PPO.",
        "",
    ]
    lines.append("| prompt | before | reward | after | reward |")
    lines.append("|---|---|---|---|---|")
    for b, a in list(zip(before, after))[:n]:
        lines.append(
            f"| {_cell(b['prompt'])} | {_cell(b['response'])} | {b['reward']:.2f} | "
            f"{_cell(a['response'])} | {a['reward']:.2f} |"
        )
    return "\n".join(lines) + "\n"
