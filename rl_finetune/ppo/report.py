"""Reports of a PPO run: metrics.jsonl rows, PNG plots, and samples.md (before/after for the same prompts)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rl_finetune.ppo.core import distinct_n


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
