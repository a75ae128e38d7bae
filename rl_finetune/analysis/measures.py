"""The measurements, each on one model with its OWN activations, final norm and unembedding.

The quantity throughout is the logit difference at the last position: the mean logit of the
positive tokens minus the mean logit of the negative ones, ``d . final_norm(h)`` (+ the unembedding's
bias) with ``d = mean W_U[pos] - mean W_U[neg]``.

Direct logit attribution splits the final residual ``h = embed + sum_l (attn_l + mlp_l)`` into its
terms. The final norm is linear once its scale is fixed, so each term is divided by the scale of
the FULL residual (LayerNorm: its standard deviation after centring every term; RMSNorm: its root
mean square), times the gain, dotted with ``d``; the norm's bias (LayerNorm) and the unembedding's
bias are a constant term. The terms then add up exactly to the model's logit difference, which
:func:`attribution` checks (``error``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rl_finetune.analysis.hooks import Cache, Parts, patched, patched_rows, run_with_cache


def direction(p: Parts, pos_ids: list[int], neg_ids: list[int]) -> torch.Tensor:
    w = p.unembed.weight
    return w[pos_ids].mean(0) - w[neg_ids].mean(0)


def logit_diff(logits: torch.Tensor, pos_ids: list[int], neg_ids: list[int]) -> float:
    """Of last-position logits (..., vocab) -> float (batch 1)."""
    last = logits[0, -1] if logits.dim() == 3 else logits
    return float(last[pos_ids].mean() - last[neg_ids].mean())


def decode(p: Parts, resid: torch.Tensor) -> torch.Tensor:
    """The model's own final norm and unembedding applied to a residual stream."""
    return p.unembed(p.final_norm(resid))


def logit_lens(p: Parts, cache: Cache, pos_ids, neg_ids) -> tuple[list[float], torch.Tensor]:
    """Per layer 0..n_layers (0 = embeddings): the logit difference and the log-probs (n_layers+1, vocab)
    of the last position's residual stream decoded with this model's own final norm and unembedding."""
    with torch.no_grad():
        resid = torch.stack([cache.resid_at(layer)[0, -1] for layer in range(p.n_layers + 1)])
        logits = decode(p, resid)
    diffs = [logit_diff(row, pos_ids, neg_ids) for row in logits]
    return diffs, torch.log_softmax(logits.float(), -1)


@dataclass
class Attribution:
    embed: float
    attn: np.ndarray  # (n_layers,)
    mlp: np.ndarray  # (n_layers,)
    heads: np.ndarray  # (n_layers, n_heads); heads + head bias add up to attn
    const: float  # the norm's and the unembedding's biases
    total: float  # sum of all terms
    actual: float  # the model's logit difference from its logits
    head_error: float  # max |sum of heads + bias - attn|
    scale: float  # the final norm's scale of the full residual (std or RMS)

    @property
    def error(self) -> float:
        return abs(self.total - self.actual)


def _norm_projector(norm: nn.Module, h: torch.Tensor, d: torch.Tensor):
    """(project(term) -> float, constant, scale) for the final norm at the full residual ``h``."""
    gain = norm.weight
    if isinstance(norm, nn.LayerNorm):
        scale = torch.sqrt(h.var(unbiased=False) + norm.eps)
        bias = float(norm.bias @ d) if norm.bias is not None else 0.0
        return (lambda c: float(((c - c.mean(-1, keepdim=True)) / scale * gain) @ d)), bias, float(scale)
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)
    scale = torch.sqrt(h.pow(2).mean() + eps)
    return (lambda c: float((c / scale * gain) @ d)), 0.0, float(scale)


@torch.no_grad()
def attribution(p: Parts, cache: Cache, pos_ids, neg_ids) -> Attribution:
    """Direct logit attribution at the last position, per layer (attention, MLP) and per head."""
    d = direction(p, pos_ids, neg_ids)
    h = cache.resid[-1][0, -1]
    project, const, scale = _norm_projector(p.final_norm, h, d)
    if getattr(p.unembed, "bias", None) is not None:
        const += float(p.unembed.bias @ d)
    attn = np.array([project(a[0, -1]) for a in cache.attn])
    mlp = np.array([project(m[0, -1]) for m in cache.mlp])
    heads = np.zeros((p.n_layers, p.n_heads))
    head_error = 0.0
    for layer in range(p.n_layers):
        z = cache.heads[layer][0, -1]  # (n_heads, head_dim)
        out = torch.einsum("hd,hdm->hm", z, p.head_weights(layer))  # each head's write to the residual
        heads[layer] = [project(o) for o in out]
        bias = p.head_bias(layer)
        b = project(bias) if bias is not None else 0.0
        head_error = max(head_error, abs(heads[layer].sum() + b - attn[layer]))
    embed = project(cache.embed[0, -1])
    total = embed + attn.sum() + mlp.sum() + const
    return Attribution(
        embed, attn, mlp, heads, const, float(total), logit_diff(cache.logits, pos_ids, neg_ids), head_error, scale
    )


@torch.no_grad()
def patched_diff(model, p: Parts, source: Cache, ids: torch.Tensor, pos_ids, neg_ids, **patch) -> float:
    """The logit difference of ``model`` with activations of ``source`` patched in (see hooks.patched)."""
    with patched(p, source, **patch):
        logits = model(input_ids=ids, use_cache=False).logits
    return logit_diff(logits, pos_ids, neg_ids)


#: A base -> tuned logit gap smaller than this has nothing to recover (fractions are nan).
NO_GAP = 1e-6
#: Rows (single patches) per batched forward pass of :func:`sweep`.
PATCH_BATCH = 64


def recovered(patched_value: float, base_value: float, tuned_value: float) -> float:
    """The fraction of the base -> tuned logit gap that a patch recovers (nan when there is no gap)."""
    gap = tuned_value - base_value
    return float("nan") if abs(gap) < NO_GAP else (patched_value - base_value) / gap


@torch.no_grad()
def sweep(model, p: Parts, source: Cache, ids: torch.Tensor, pos_ids, neg_ids, *, kind: str, rows) -> np.ndarray:
    """The logit difference of ``model`` under each single patch of ``rows`` ((layer, position, head)
    triples, see hooks.patched_rows), ``PATCH_BATCH`` patches per forward pass: (len(rows),)."""
    out = []
    for start in range(0, len(rows), PATCH_BATCH):
        chunk = rows[start : start + PATCH_BATCH]
        with patched_rows(p, source, kind=kind, rows=chunk):
            logits = model(input_ids=ids.expand(len(chunk), -1), use_cache=False, logits_to_keep=1).logits[:, -1]
        out.append((logits[:, pos_ids].mean(-1) - logits[:, neg_ids].mean(-1)).float())
    return torch.cat(out).numpy() if out else np.zeros(0)


@torch.no_grad()
def patching(base, pb: Parts, tuned_cache: Cache, ids, pos_ids, neg_ids, base_ld, tuned_ld, *, head_layers=()):
    """Base <- tuned activation patching, as fractions of the logit gap recovered, one activation at a time:
    per block and position for the block output ("grid", the residual after it), the attention output
    ("grid_attn") and the MLP output ("grid_mlp"), each (n_layers, seq), with their last columns as
    "resid", "attn" and "mlp"; per head and position for the blocks ``head_layers`` ("head_grid",
    {layer: (n_heads, seq)}, last column as "heads"); all blocks at every position ("all") and none ("none")."""
    n, seq = pb.n_layers, ids.shape[1]
    gap = tuned_ld - base_ld

    def frac(values: np.ndarray) -> np.ndarray:
        return np.full_like(values, np.nan) if abs(gap) < NO_GAP else (values - base_ld) / gap

    def run(kind: str, rows) -> np.ndarray:
        return frac(sweep(base, pb, tuned_cache, ids, pos_ids, neg_ids, kind=kind, rows=rows))

    cells = [(layer, t, None) for layer in range(n) for t in range(seq)]
    out: dict = {}
    for kind, key in (("resid", "grid"), ("attn", "grid_attn"), ("mlp", "grid_mlp")):
        out[key] = run(kind, cells).reshape(n, seq)
        out[kind] = out[key][:, -1]
    out["head_grid"] = {
        layer: run("head", [(layer, t, h) for h in range(pb.n_heads) for t in range(seq)]).reshape(pb.n_heads, seq)
        for layer in head_layers
    }
    out["heads"] = {layer: g[:, -1] for layer, g in out["head_grid"].items()}

    def one(**patch) -> float:
        return recovered(patched_diff(base, pb, tuned_cache, ids, pos_ids, neg_ids, **patch), base_ld, tuned_ld)

    out["all"] = one(kind="resid", layers=range(n))
    out["none"] = one(kind="resid", layers=[])
    return out


def from_the_end(grids: list[np.ndarray], gaps: list[float]) -> np.ndarray:
    """Patching grids (..., seq_i) of several prompts aligned at their LAST position and averaged with
    weights |gap_i| (a prompt with no gap weighs nothing): (..., max seq_i), the last column being the
    last position, column -1-k the k-th position before it; nan where no prompt with a gap reaches."""
    width = max(g.shape[-1] for g in grids)
    num = np.zeros((*grids[0].shape[:-1], width))
    den = np.zeros_like(num)
    for g, gap in zip(grids, gaps):
        w = abs(gap) if abs(gap) >= NO_GAP else 0.0
        num[..., width - g.shape[-1] :] += w * np.nan_to_num(g)
        den[..., width - g.shape[-1] :] += w * np.isfinite(g)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def weight_change(base, tuned, pb: Parts) -> dict[str, dict[str, float]]:
    """Relative norm ||tuned - base|| / ||base|| per block and module group (attn, mlp, norm), and
    for the parameters outside the blocks ("embed", "final_norm", "unembed")."""
    block_names = {id(b): i for i, b in enumerate(pb.blocks)}
    where: dict[str, tuple[str, str]] = {}
    for bmod_name, mod in base.named_modules():
        if id(mod) in block_names:
            where[bmod_name + "."] = (f"layer {block_names[id(mod)]}", "")
    sums: dict[str, dict[str, list[float]]] = {}
    tuned_params = dict(tuned.named_parameters())
    final_norm = {n for n, m in base.named_modules() if m is pb.final_norm}
    unembed = {n for n, m in base.named_modules() if m is pb.unembed}
    for name, w in base.named_parameters():
        dw = (tuned_params[name] - w).detach().double()
        prefix = next((k for k in where if name.startswith(k)), None)
        if prefix is not None:
            row = where[prefix][0]
            rest = name[len(prefix) :]
            group = "attn" if "attn" in rest else "mlp" if "mlp" in rest else "norm"
        else:
            row = "outside blocks"
            module = name.rsplit(".", 1)[0]
            group = "final_norm" if module in final_norm else "unembed" if module in unembed else "embed"
        acc = sums.setdefault(row, {}).setdefault(group, [0.0, 0.0])
        acc[0] += float(dw.pow(2).sum())
        acc[1] += float(w.detach().double().pow(2).sum())
    # a tied unembedding is listed once, under its first name (the embedding)
    return {row: {g: (a / b) ** 0.5 if b > 0 else 0.0 for g, (a, b) in groups.items()} for row, groups in sums.items()}


def mean_ci(values) -> tuple[float, float, float]:
    """Mean and a 95% t-interval."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    m = float(x.mean())
    if len(x) < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return m, m - half, m + half


def prompt_stats(base, pb, tuned, pt, encoded: list[torch.Tensor], pos_ids, neg_ids) -> dict:
    """Over many prompts: the logit difference of both models and the per-layer attribution difference."""
    rows = []
    for ids in encoded:
        ab = attribution(pb, run_with_cache(base, pb, ids), pos_ids, neg_ids)
        at = attribution(pt, run_with_cache(tuned, pt, ids), pos_ids, neg_ids)
        rows.append((ab.actual, at.actual, at.attn - ab.attn, at.mlp - ab.mlp, max(ab.error, at.error)))
    base_ld = np.array([r[0] for r in rows])
    tuned_ld = np.array([r[1] for r in rows])
    attn_diff = np.stack([r[2] for r in rows])
    mlp_diff = np.stack([r[3] for r in rows])
    layer_diff = attn_diff + mlp_diff
    return {
        "n": len(rows),
        "base": mean_ci(base_ld),
        "tuned": mean_ci(tuned_ld),
        "change": mean_ci(tuned_ld - base_ld),
        "grew": float((tuned_ld > base_ld).mean()),
        "layer": [mean_ci(layer_diff[:, i]) for i in range(layer_diff.shape[1])],
        "attn": [mean_ci(attn_diff[:, i]) for i in range(attn_diff.shape[1])],
        "mlp": [mean_ci(mlp_diff[:, i]) for i in range(mlp_diff.shape[1])],
        "max_error": float(max(r[4] for r in rows)),
    }
