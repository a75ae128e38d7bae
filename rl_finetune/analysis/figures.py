"""The report's PNGs (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)


def draw_all(res: dict, out: Path) -> None:
    plt = _plt()
    main = res["probes"][0]
    n = res["n_layers"]
    layers = np.arange(n)

    lens = main["lens"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(n + 1)
    a1.plot(x, lens["base"], "o-", label="base")
    a1.plot(x, lens["tuned"], "s--", label="tuned")
    a1.set(
        xlabel="residual after block (0 = embeddings, k = block k-1)",
        ylabel="logit difference",
        title=f"logit lens: {main['prompt']!r}",
    )
    a1.legend()
    a2.semilogy(x, np.maximum(lens["kl"], 1e-12), "o-", color="C3")
    a2.set(xlabel="residual after block (0 = embeddings)", ylabel="KL(tuned‖base), nats", title="lens divergence")
    _save(fig, out / "lens.png")

    ab, at = main["attr"]["base"], main["attr"]["tuned"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    w = 0.2
    a1.bar(layers - 1.5 * w, ab.attn, w, label="attn base")
    a1.bar(layers - 0.5 * w, at.attn, w, label="attn tuned")
    a1.bar(layers + 0.5 * w, ab.mlp, w, label="MLP base")
    a1.bar(layers + 1.5 * w, at.mlp, w, label="MLP tuned")
    a1.set(xlabel="block", ylabel="direct logit attribution", title="each model, its own unembedding")
    a1.legend(fontsize=7)
    a2.bar(layers - w / 2, at.attn - ab.attn, w, label="attn Δ")
    a2.bar(layers + w / 2, at.mlp - ab.mlp, w, label="MLP Δ")
    a2.set(xlabel="block", ylabel="tuned − base", title="attribution change")
    a2.legend(fontsize=7)
    _save(fig, out / "attribution.png")

    heads = at.heads - ab.heads
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * res["n_heads"] + 2), max(3, 0.22 * n + 1)))
    lim = max(float(np.abs(heads).max()), 1e-9)
    im = ax.imshow(heads, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto", origin="lower")
    ax.set(xlabel="head", ylabel="block", title="per-head attribution change")
    fig.colorbar(im, ax=ax)
    _save(fig, out / "heads.png")

    pr = res["patch"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for kind in ("resid", "attn", "mlp"):
        a1.plot(layers, pr[kind], "o-", label={"resid": "block output", "attn": "attention", "mlp": "MLP"}[kind])
    a1.axhline(1, color="grey", lw=0.5)
    a1.set(xlabel="block", ylabel="fraction of gap recovered", title="patch base ← tuned, last position")
    a1.legend(fontsize=7)
    grid = pr["grid"]
    im = a2.imshow(grid, cmap="RdBu", vmin=-1, vmax=1, aspect="auto", origin="lower")
    a2.set_xticks(range(len(res["patch_tokens"])), [_label(t) for t in res["patch_tokens"]], rotation=60, fontsize=7)
    a2.set(ylabel="block", title="block output patched at one position")
    fig.colorbar(im, ax=a2)
    _save(fig, out / "patching.png")

    positions(res, out / "positions.png")
    if "reward" in res:
        reward_tokens(res["reward"], out / "reward_tokens.png")

    fig, ax = plt.subplots(figsize=(7, 3.4))
    groups = sorted({g for i in range(n) for g in res["weights"][f"layer {i}"]})
    for g in groups:
        ax.plot(layers, [res["weights"][f"layer {i}"].get(g, np.nan) for i in range(n)], "o-", label=g)
    ax.set(xlabel="block", ylabel="‖tuned − base‖ / ‖base‖", title="weight change")
    ax.legend(fontsize=7)
    _save(fig, out / "weights.png")

    if "stats" in res:
        s = res["stats"]
        fig, ax = plt.subplots(figsize=(7, 3.4))
        for off, key in ((-0.15, "attn"), (0.15, "mlp")):
            m = np.array([t[0] for t in s[key]])
            err = np.array([[t[0] - t[1], t[2] - t[0]] for t in s[key]]).T
            ax.errorbar(layers + off, m, yerr=np.nan_to_num(err), fmt="o", capsize=2, label=f"{key} Δ")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set(xlabel="block", ylabel="attribution change (mean, 95% CI)", title=f"over {s['n']} prompts")
        ax.legend(fontsize=7)
        _save(fig, out / "stats.png")


def _label(text: str) -> str:
    """A token as a tick label: quoted, with matplotlib's mathtext ``$`` escaped."""
    return repr(text).replace("$", r"\$")


def positions(res: dict, path: Path) -> None:
    """Patching per block and position over all probes (aligned at the last position), for the block
    output, attention and MLP, and per head and position for the top blocks."""
    plt = _plt()
    pp = res["patch_probes"]
    fe, heads = pp["from_end"], pp["head_from_end"]
    width = fe["grid"].shape[1]
    ticks = [("last" if k == 0 else f"-{k}") for k in range(width - 1, -1, -1)]
    panels = [(fe["grid"], "block output"), (fe["grid_attn"], "attention"), (fe["grid_mlp"], "MLP")]
    panels += [(hg, f"block {layer} heads") for layer, hg in heads.items()]
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 4), squeeze=False, layout="constrained")
    for ax, (grid, title) in zip(axes[0], panels):
        im = ax.imshow(grid, cmap="RdBu", vmin=-1, vmax=1, aspect="auto", origin="lower")
        ax.set_xticks(range(width), ticks, fontsize=7)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="position (from the last)", ylabel="head" if "heads" in title else "block", title=title)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="fraction of gap recovered")
    fig.suptitle(f"patch base ← tuned, one activation at a time, |gap|-weighted mean over {pp['with_gap']} probes")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reward_tokens(rw: dict, path: Path) -> None:
    """Each example's occlusion attribution per reward-model token."""
    plt = _plt()
    examples = rw["examples"]
    fig, axes = plt.subplots(len(examples), 1, figsize=(10, 2.2 * len(examples)), squeeze=False)
    for ax, ex in zip(axes[:, 0], examples):
        d = np.asarray(ex.deltas, dtype=float)
        ax.bar(range(len(d)), d, color=np.where(d >= 0, "C2", "C3"))
        ax.set_xticks(range(len(d)), [_label(t) for t in ex.tokens], rotation=70, fontsize=7)
        ax.axhline(0, color="grey", lw=0.5)
        head = ex.text if len(ex.text) <= 70 else ex.text[:70] + "…"
        ax.set(ylabel="Δ score", title=f"{_label(head)}: score {ex.score:+.3f} ({rw['kind']})")
    _save(fig, path)
