"""Run every measurement on two models and write the report (``report.md``, PNGs, ``results.json``)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

from common.errors import UserError
from common.paths import atomic_dir, write_json
from db.types import shown_text
from rl_finetune.analysis import figures
from rl_finetune.analysis.hooks import parts, run_with_cache
from rl_finetune.analysis.measures import (
    NO_GAP,
    attribution,
    from_the_end,
    logit_lens,
    patching,
    prompt_stats,
    weight_change,
)
from rl_finetune.analysis.reward import reward_attribution

log = logging.getLogger(__name__)

PROBES = [
    "This movie was really",
    "I thought this film was",
    "The acting in this movie was",
    "Overall, the plot was",
    "This is one of the most",
]
POSITIVE = [" good"]
NEGATIVE = [" bad"]
SAME = 1e-6  # a lens KL (nats) or logit-difference change below this counts as "identical"
NOTABLE = 0.01  # a patch recovering less of the gap than this is not named in the headline


def token_ids(tok, words: list[str], what: str) -> list[int]:
    ids = []
    for w in words:
        enc = tok.encode(w, add_special_tokens=False)
        if len(enc) != 1:
            raise UserError(
                f"the {what} word {w!r} is {len(enc)} tokens for this tokenizer, not one.",
                f"pick single-token words (with their leading space, e.g. ' good'); {w!r} splits as "
                f"{[tok.decode([i]) for i in enc]}.",
            )
        ids.append(enc[0])
    return ids


def encode(tok, prompt: str) -> torch.Tensor:
    """(1, seq) token ids of ``prompt`` with the tokenizer's special tokens; a prompt with no token of
    its own (blank, or only characters the tokenizer drops) is refused."""
    if not prompt.strip() or not tok(prompt, add_special_tokens=False).input_ids:
        raise UserError(
            f"the prompt {prompt!r} tokenises to nothing.",
            "give prompts with some text in them (--probe TEXT; --prompts FILE with one prompt per line).",
        )
    return torch.tensor([tok(prompt, add_special_tokens=True).input_ids])


@torch.no_grad()
def behaviour(model, tok, ids, *, samples: int, max_new_tokens: int, seed: int) -> dict:
    kw = {"max_new_tokens": max_new_tokens, "pad_token_id": tok.pad_token_id or tok.eos_token_id}
    mask = torch.ones_like(ids)
    greedy = model.generate(ids, attention_mask=mask, do_sample=False, **kw)
    torch.manual_seed(seed)
    sampled = model.generate(
        ids, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0, num_return_sequences=samples, **kw
    )
    text = lambda seq: tok.decode(seq[ids.shape[1] :], skip_special_tokens=True)  # noqa: E731
    return {"greedy": text(greedy[0]), "sampled": [text(s) for s in sampled]}


def next_tokens(tok, base_logits, tuned_logits, k: int = 10) -> dict:
    pb, pt = torch.softmax(base_logits[0, -1].float(), -1), torch.softmax(tuned_logits[0, -1].float(), -1)
    show = lambda i: tok.decode([int(i)])  # noqa: E731
    top = lambda p: [(show(i), float(p[i])) for i in torch.topk(p, k).indices]  # noqa: E731
    delta = pt - pb
    return {
        "base": top(pb),
        "tuned": top(pt),
        "gained": [(show(i), float(delta[i])) for i in torch.topk(delta, 5).indices],
        "lost": [(show(i), float(delta[i])) for i in torch.topk(-delta, 5).indices],
    }


def analyse(
    base,
    tuned,
    tok,
    out: Path,
    *,
    names: tuple[str, str],
    probes=None,
    prompts=None,
    positive=None,
    negative=None,
    samples: int = 3,
    max_new_tokens: int = 20,
    seed: int = 0,
    head_layers: int = 2,
    reward: str | Path | None = None,
    reward_probes: int = 2,
) -> dict:
    """Analyse ``tuned`` against ``base`` (loaded models sharing ``tok``); write the report into ``out``
    atomically and return the figures as a dict.

    Activation patching runs on every probe; ``reward`` (a reward model folder, or None for none)
    adds its token attribution on the greedy continuations of both models for the first
    ``reward_probes`` probes."""
    probes = list(probes or PROBES)
    positive, negative = list(positive or POSITIVE), list(negative or NEGATIVE)
    pos_ids, neg_ids = token_ids(tok, positive, "positive"), token_ids(tok, negative, "negative")
    pb, pt = parts(base), parts(tuned)
    enc = [encode(tok, p) for p in probes]
    res: dict = {
        "base": names[0],
        "tuned": names[1],
        "family": pb.family,
        "n_layers": pb.n_layers,
        "n_heads": pb.n_heads,
        "positive": positive,
        "negative": negative,
        "probes": [],
    }

    tuned_caches = []
    for prompt, ids in zip(probes, enc):
        cb, ct = run_with_cache(base, pb, ids), run_with_cache(tuned, pt, ids)
        tuned_caches.append(ct)
        ab, at = attribution(pb, cb, pos_ids, neg_ids), attribution(pt, ct, pos_ids, neg_ids)
        lens_b, lp_b = logit_lens(pb, cb, pos_ids, neg_ids)
        lens_t, lp_t = logit_lens(pt, ct, pos_ids, neg_ids)
        kl = (lp_t.exp() * (lp_t - lp_b)).sum(-1).clamp(min=0).tolist()
        rel = [
            float(
                (ct.resid_at(k)[0, -1] - cb.resid_at(k)[0, -1]).norm() / cb.resid_at(k)[0, -1].norm().clamp(min=1e-12)
            )
            for k in range(pb.n_layers + 1)
        ]
        res["probes"].append(
            {
                "prompt": prompt,
                "behaviour": {
                    "base": behaviour(base, tok, ids, samples=samples, max_new_tokens=max_new_tokens, seed=seed),
                    "tuned": behaviour(tuned, tok, ids, samples=samples, max_new_tokens=max_new_tokens, seed=seed),
                },
                "next": next_tokens(tok, cb.logits, ct.logits),
                "ld": (ab.actual, at.actual),
                "lens": {"base": lens_b, "tuned": lens_t, "kl": kl, "resid": rel},
                "attr": {"base": ab, "tuned": at},
            }
        )
    main = res["probes"][0]
    ab, at = main["attr"]["base"], main["attr"]["tuned"]
    res["weights"] = weight_change(base, tuned, pb)
    moved = [i for i in range(pb.n_layers) if max(res["weights"][f"layer {i}"].values()) > 0]
    by_change = sorted(moved, key=lambda i: -max(res["weights"][f"layer {i}"].values()))
    res["head_layers"] = sorted(by_change[:head_layers]) or list(range(pb.n_layers))[-head_layers:]
    patches = [
        patching(base, pb, ct, ids, pos_ids, neg_ids, *pr["ld"], head_layers=res["head_layers"])
        for ct, ids, pr in zip(tuned_caches, enc, res["probes"])
    ]
    res["patch"] = patches[0]
    gaps = [pr["ld"][1] - pr["ld"][0] for pr in res["probes"]]
    res["patch_probes"] = {
        "n": len(patches),
        "with_gap": sum(abs(g) >= NO_GAP for g in gaps),
        "gaps": gaps,
        "reach": [  # per position from the last: how many probes with a gap are that long
            sum(pa["grid"].shape[1] > k and abs(g) >= NO_GAP for pa, g in zip(patches, gaps))
            for k in range(max(pa["grid"].shape[1] for pa in patches))
        ],
        "from_end": {key: from_the_end([pa[key] for pa in patches], gaps) for key in ("grid", "grid_attn", "grid_mlp")},
        "head_from_end": {
            layer: from_the_end([pa["head_grid"][layer] for pa in patches], gaps) for layer in res["head_layers"]
        },
    }
    res["patch_tokens"] = [tok.decode([int(i)]) for i in enc[0][0]]
    if prompts:
        encoded = [encode(tok, p) for p in prompts]
        res["stats"] = prompt_stats(base, pb, tuned, pt, encoded, pos_ids, neg_ids)
    if reward is not None:
        texts = [
            shown_text(pr["prompt"], pr["behaviour"][m]["greedy"])
            for pr in res["probes"][:reward_probes]
            for m in ("base", "tuned")
        ]
        res["reward"] = reward_attribution(reward, texts)
    res["headline"] = headline(res)
    with atomic_dir(out) as tmp:
        figures.draw_all(res, tmp)
        (tmp / "report.md").write_text(markdown(res), encoding="utf-8")
        write_json(tmp / "results.json", _jsonable(res))
    return res


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if hasattr(obj, "__dataclass_fields__"):
        extra = {"error": obj.error} if hasattr(obj, "error") else {}
        return {k: _jsonable(getattr(obj, k)) for k in obj.__dataclass_fields__} | extra
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ------------------------------------------------------------------------------ the markdown


def _f(x: float, nd: int = 3) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:+.{nd}f}"


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.0f}%".replace("-0%", "0%")


def _ci(t) -> str:
    return f"{_f(t[0])} (95% CI {_f(t[1])} to {_f(t[2])})"


def first_divergence(main: dict) -> int | None:
    """The first point (0 = embeddings, k = after block k-1) where the two residual streams differ."""
    return next((k for k, r in enumerate(main["lens"]["resid"]) if r > SAME), None)


def headline(res: dict) -> list[str]:
    main = res["probes"][0]
    ab, at = main["attr"]["base"], main["attr"]["tuned"]
    n = res["n_layers"]
    pair = f"{'/'.join(map(repr, res['positive']))} − {'/'.join(map(repr, res['negative']))}"
    lines = [
        f"- On {main['prompt']!r} the {pair} logit difference goes from {_f(ab.actual)} (base) to "
        f"{_f(at.actual)} (tuned)."
    ]
    if "stats" in res:
        s = res["stats"]
        lines.append(f"- Over {s['n']} prompts its change is {_ci(s['change'])}; it grew on {_pct(s['grew'])} of them.")
    k = first_divergence(main)
    lens = main["lens"]
    if k is None:
        lines.append("- Logit lens: the residual streams are identical at every layer.")
    elif k == 0:
        lines.append("- Logit lens: the residual streams differ already at the embeddings.")
    else:
        through = "the embeddings" if k == 1 else f"block {k - 2}"
        below = max(lens["kl"][:k])
        lines.append(
            f"- Logit lens: the residual stream is identical through {through} and diverges at block {k - 1} "
            f"(lens KL {lens['kl'][k]:.4f} nats there, {lens['kl'][-1]:.4f} at the last layer; "
            + (
                "0 below it)."
                if below <= SAME
                else f"at most {below:.1e} below it, from the changed final norm alone)."
            )
        )
    diff = [(f"attn {i}", at.attn[i] - ab.attn[i]) for i in range(n)] + [
        (f"MLP {i}", at.mlp[i] - ab.mlp[i]) for i in range(n)
    ]
    top = sorted(diff, key=lambda x: -abs(x[1]))[:3]
    if abs(top[0][1]) <= SAME:
        lines.append("- Direct logit attribution: no block's term changed on this prompt.")
    else:
        lines.append(
            "- Direct logit attribution of the change (this prompt): "
            + ", ".join(f"{c} {_f(v)}" for c, v in top)
            + f" of a total {_f(at.actual - ab.actual)}."
        )
    if "stats" in res:
        lay = res["stats"]["layer"]
        i = int(np.argmax([abs(m[0]) for m in lay]))
        if abs(lay[i][0]) > SAME:
            lines.append(f"- Over the prompts, block {i} changes the attribution most: {_ci(lay[i])}.")
    heads = at.heads - ab.heads
    flat = sorted(((abs(heads[li, h]), li, h) for li in range(n) for h in range(res["n_heads"])), reverse=True)[:3]
    if flat[0][0] > SAME:
        lines.append(
            "- Heads with the largest attribution change: "
            + ", ".join(f"L{li}H{h} {_f(heads[li, h])}" for _, li, h in flat)
            + "."
        )
    lines.append(where(res))
    moved = [i for i in range(n) if max(res["weights"][f"layer {i}"].values()) > 0]
    lines.append(
        "- Weights: no block changed."
        if not moved
        else f"- Weights moved in {_blocks(moved)}; unchanged (frozen) in {_ranges(sorted(set(range(n)) - set(moved))) or 'none'}."
    )
    worst = max(max(p["attr"]["base"].error, p["attr"]["tuned"].error) for p in res["probes"])
    worst = max(worst, res.get("stats", {}).get("max_error", 0.0))
    lines.append(
        f"- Check: the attribution terms add up to each model's own logit difference within {worst:.1e} "
        f"({'OK' if worst < 1e-3 else 'FAILED: the decomposition is wrong for this model'})."
    )
    return lines


def _before(k: int) -> str:
    return "the last position" if k == 0 else f"{k} token{'s' if k > 1 else ''} before the last"


def where(res: dict) -> str:
    """The headline's answer to "where does the change live": the blocks and positions whose tuned
    activations, patched into the base model one at a time, recover the logit gap (|gap|-weighted mean
    over the probes, positions counted from the last)."""
    pp = res["patch_probes"]
    g = pp["from_end"]["grid"]  # (n_layers, width), last column = last position
    moved = [i for i in range(res["n_layers"]) if max(res["weights"][f"layer {i}"].values()) > 0]
    if not np.isfinite(g).any():
        if not moved:
            return "- Where: nowhere. No weight moved and no probe's logit difference changed: the two models are the same."
        return (
            f"- Where: weights moved in {_blocks(moved)}, but no probe's logit difference changed "
            f"(gap < {NO_GAP:g}), so patching has nothing to localise."
        )
    width = g.shape[1]
    best = np.nan_to_num(g, nan=-np.inf)
    strong = [k for k in range(width) if best[:, width - 1 - k].max() >= 0.5]
    last = best[:, -1]
    blocks = [int(i) for i in np.argsort(-last)[:3] if last[i] >= 0.1] or [int(np.argmax(last))]
    at = ", ".join(_before(k) for k in strong) if strong else "no single position"
    text = (
        f"- Where (patching base ← tuned one activation at a time, |gap|-weighted mean over {pp['with_gap']} "
        f"probe{'s' if pp['with_gap'] != 1 else ''}): the change lives at {at}"
        + (" only" if strong == [0] else "")
        + ". At the last position the output of "
        + ", ".join(f"block {i} recovers {_pct(last[i])}" for i in blocks)
        + " of the gap"
    )
    comps = [(f"MLP {i}", pp["from_end"]["grid_mlp"][i, -1]) for i in range(res["n_layers"])] + [
        (f"attention {i}", pp["from_end"]["grid_attn"][i, -1]) for i in range(res["n_layers"])
    ]
    comps = sorted((c for c in comps if np.isfinite(c[1]) and c[1] >= NOTABLE), key=lambda c: -c[1])[:2]
    if comps:
        text += " (" + ", ".join(f"{c} alone {_pct(v)}" for c, v in comps) + ")"
    if width > 1 and np.isfinite(g[:, :-1]).any():
        li, col = np.unravel_index(np.nanargmax(g[:, :-1]), g[:, :-1].shape)
        text += f"; at any earlier position no single block output recovers more than {_pct(g[li, col])}"
        if g[li, col] >= NOTABLE:
            text += f" (block {li}, {_before(width - 1 - col)})"
    heads = [
        (v, layer, h, width - 1 - t)
        for layer, hg in pp["head_from_end"].items()
        for (h, t), v in np.ndenumerate(hg)
        if np.isfinite(v)
    ]
    if heads:
        v, layer, h, k = max(heads)
        of = _blocks(sorted(pp["head_from_end"]))
        text += (
            f". Best single head ({of}): L{layer}H{h} at {_before(k)}, {_pct(v)}"
            if v >= NOTABLE
            else f". No single head of {of} recovers {_pct(NOTABLE)} or more"
        )
    return text + "."


def _blocks(xs: list[int]) -> str:
    """``"block 3"`` or ``"blocks 0-2, 5"``."""
    return f"block{'s' if len(xs) > 1 else ''} {_ranges(xs)}"


def _ranges(xs: list[int]) -> str:
    out, start = [], None
    for i, x in enumerate(xs):
        if start is None:
            start = x
        if i + 1 == len(xs) or xs[i + 1] != x + 1:
            out.append(f"{start}" if start == x else f"{start}-{x}")
            start = None
    return ", ".join(out)


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(map(str, r)) + " |" for r in rows
    ]


def _q(s: str) -> str:
    return repr(s).replace("|", "\\|")


def markdown(res: dict) -> str:
    n, pair = res["n_layers"], f"{'/'.join(map(repr, res['positive']))} − {'/'.join(map(repr, res['negative']))}"
    L = [
        f"# What changed inside the model: {res['tuned']} vs {res['base']}",
        "",
        f"{res['family']} layout, {n} blocks × {res['n_heads']} heads. Logit difference = mean logit of {pair} at the "
        "last position. Every measurement of a model uses that model's own activations, final norm and unembedding "
        "(the EleutherAI notebook decoded the base model with the tuned model's cache and unembedding, so its base "
        "decomposition did not add up; here each model's terms are checked to add up to its own logit difference).",
        "",
        "## Headline",
        "",
        *headline(res),
        "",
    ]
    L += ["## 1. Behaviour", ""]
    for pr in res["probes"]:
        L += [f"**{pr['prompt']!r}** — logit difference {_f(pr['ld'][0])} → {_f(pr['ld'][1])}", ""]
        rows = [
            [m, _q(pr["behaviour"][m]["greedy"]), "<br>".join(_q(s) for s in pr["behaviour"][m]["sampled"])]
            for m in ("base", "tuned")
        ]
        L += _table(["model", "greedy", "sampled"], rows) + [""]
        nx = pr["next"]
        rows = [
            [i + 1, _q(b[0]), f"{100 * b[1]:.2f}%", _q(t[0]), f"{100 * t[1]:.2f}%"]
            for i, (b, t) in enumerate(zip(nx["base"], nx["tuned"]))
        ]
        L += _table(["rank", "base next token", "p", "tuned next token", "p"], rows) + [""]
        L += [
            "Gained most: "
            + ", ".join(f"{_q(t)} {100 * d:+.2f} pts" for t, d in nx["gained"])
            + ". Lost most: "
            + ", ".join(f"{_q(t)} {100 * d:+.2f} pts" for t, d in nx["lost"])
            + ".",
            "",
        ]
    if "stats" in res:
        s = res["stats"]
        L += [
            "## 2. Over many prompts",
            "",
            f"{s['n']} held-out prompts, mean and 95% t-interval.",
            "",
            *_table(
                ["measure", "value"],
                [
                    ["base logit difference", _ci(s["base"])],
                    ["tuned logit difference", _ci(s["tuned"])],
                    ["change", _ci(s["change"])],
                    ["share of prompts where it grew", _pct(s["grew"])],
                ],
            ),
            "",
            "Per-block attribution change (tuned − base, attention + MLP): ![stats](stats.png)",
            "",
            *_table(
                ["block", "attn", "MLP", "block total"],
                [[i, _ci(s["attn"][i]), _ci(s["mlp"][i]), _ci(s["layer"][i])] for i in range(n)],
            ),
            "",
        ]
    main = res["probes"][0]
    lens = main["lens"]
    L += [
        "## 3. Logit lens",
        "",
        f"Prompt {main['prompt']!r}: the residual stream after each block, decoded with each "
        "model's own final norm and unembedding. The last row equals the models' logits; rows before the first block "
        "that training moved must be identical (KL 0).",
        "",
        "![logit lens](lens.png)",
        "",
        *_table(
            ["residual after", "base", "tuned", "KL(tuned‖base) nats", "‖Δresidual‖/‖residual‖"],
            [
                ["embeddings" if k == 0 else f"block {k - 1}", _f(b), _f(t), f"{kl:.2e}", f"{r:.2e}"]
                for k, (b, t, kl, r) in enumerate(zip(lens["base"], lens["tuned"], lens["kl"], lens["resid"]))
            ],
        ),
        "",
    ]
    ab, at = main["attr"]["base"], main["attr"]["tuned"]
    L += [
        "## 4. Direct logit attribution",
        "",
        f"Prompt {main['prompt']!r}. Each block's attention and MLP output, "
        "divided by the final norm's scale of the full residual, times its gain, dotted with the logit-difference "
        "direction. Sum check: "
        f"base {ab.total:+.5f} vs its logit difference {ab.actual:+.5f}, tuned {at.total:+.5f} vs {at.actual:+.5f} "
        f"(embeddings base {_f(ab.embed)}, tuned {_f(at.embed)}; biases base {_f(ab.const)}, tuned {_f(at.const)}). "
        f"The final norm's scale of the residual is {ab.scale:.3f} (base) and {at.scale:.3f} (tuned): a block "
        "that training did not touch still shows an attribution change of its term × (1/tuned scale − 1/base "
        "scale) when the upper blocks change the residual's size.",
        "",
        "![attribution](attribution.png)",
        "",
        *_table(
            ["block", "attn base", "attn tuned", "attn Δ", "MLP base", "MLP tuned", "MLP Δ"],
            [
                [
                    i,
                    _f(ab.attn[i]),
                    _f(at.attn[i]),
                    _f(at.attn[i] - ab.attn[i]),
                    _f(ab.mlp[i]),
                    _f(at.mlp[i]),
                    _f(at.mlp[i] - ab.mlp[i]),
                ]
                for i in range(n)
            ],
        ),
        "",
    ]
    heads = at.heads - ab.heads
    flat = sorted(((abs(heads[li, h]), li, h) for li in range(n) for h in range(res["n_heads"])), reverse=True)[:10]
    L += [
        "Per head (the attention output split by head before the output projection): ![heads](heads.png)",
        "",
        *_table(
            ["head", "base", "tuned", "Δ"],
            [[f"L{li}H{h}", _f(ab.heads[li, h]), _f(at.heads[li, h]), _f(heads[li, h])] for _, li, h in flat],
        ),
        "",
    ]
    pr = res["patch"]
    L += [
        "## 5. Activation patching, base ← tuned",
        "",
        f"Prompt {main['prompt']!r}. Each cell: the fraction of the "
        f"logit gap ({_f(ab.actual)} → {_f(at.actual)}) recovered when the tuned model's activation replaces the base "
        f"model's (1 = the tuned value, 0 = unchanged). All blocks at every position: {_pct(pr['all'])}; none: {_pct(pr['none'])}.",
        "",
        "![patching](patching.png)",
        "",
        *_table(
            ["block", "output (residual)", "attention", "MLP"],
            [[i, _pct(pr["resid"][i]), _pct(pr["attn"][i]), _pct(pr["mlp"][i])] for i in range(n)],
        ),
        "",
    ]
    for layer, fr in pr["heads"].items():
        order = np.argsort(-np.nan_to_num(fr, nan=-np.inf))[:5]
        L += [
            f"Block {layer}, single heads at the last position: "
            + ", ".join(f"H{h} {_pct(fr[h])}" for h in order)
            + "."
        ]
    L += ["", *_positions_section(res)]
    L += [
        "",
        "## 6. Weight change",
        "",
        "Relative norm ‖tuned − base‖ / ‖base‖ per block and module (0 = frozen).",
        "",
        "![weights](weights.png)",
        "",
    ]
    groups = sorted({g for row in res["weights"].values() for g in row})
    L += _table(
        ["where", *groups],
        [[row, *(f"{vals[g]:.2e}" if g in vals else "" for g in groups)] for row, vals in res["weights"].items()],
    ) + [""]
    if "reward" in res:
        L += _reward_section(res["reward"])
    return "\n".join(L)


def _best(col: np.ndarray) -> str:
    """``"i: x%"``: the block with the largest finite entry of a column of a patching grid, and that entry."""
    if not np.isfinite(col).any():
        return "n/a"
    i = int(np.nanargmax(col))
    return f"{i}: {_pct(col[i])}"


def _positions_section(res: dict) -> list[str]:
    pp = res["patch_probes"]
    fe = pp["from_end"]
    width = fe["grid"].shape[1]
    L = [
        f"### Per position, over the {pp['n']} probes",
        "",
        "The same single patches on every probe, aligned at each prompt's last position and averaged with "
        f"weights |gap| (a probe without a logit gap weighs nothing; {pp['with_gap']} of {pp['n']} have one). "
        "Per position, the block whose output (residual), attention or MLP recovers most, and the fraction: "
        "![positions](positions.png)",
        "",
    ]
    head_cols = pp["head_from_end"]
    rows = []
    for k in range(width):
        col = width - 1 - k
        head = "n/a"
        cand = [(hg[h, col], layer, h) for layer, hg in head_cols.items() for h in range(hg.shape[0])]
        cand = [c for c in cand if np.isfinite(c[0])]
        if cand:
            v, layer, h = max(cand)
            head = f"L{layer}H{h}: {_pct(v)}"
        rows.append(
            [
                _before(k),
                pp["reach"][k],
                _best(fe["grid"][:, col]),
                _best(fe["grid_attn"][:, col]),
                _best(fe["grid_mlp"][:, col]),
                head,
            ]
        )
    L += _table(["position", "probes", "block output", "attention", "MLP", "single head (top blocks)"], rows) + [""]
    for layer, hg in head_cols.items():
        cols = list(range(width))
        L += [f"Block {layer}, each head patched at each position (mean over the probes):", ""]
        L += _table(
            ["head", *(_before(width - 1 - c).replace("the last position", "last") for c in cols)],
            [[f"H{h}", *(_pct(hg[h, c]) for c in cols)] for h in range(hg.shape[0])],
        ) + [""]
    return L


def _reward_section(rw: dict) -> list[str]:
    L = [
        "## 7. The reward model: which tokens move its score",
        "",
        f"Reward model {rw['model_dir']!r}, score = {rw['kind']}. Each of the reward model's own tokens of the "
        "text is replaced in turn by its mask token and the text is scored again; a token's attribution is "
        "score(text) − score(text with it masked), positive when it raised the score (occlusion: the policy "
        "side sees the reward model only as reward_fn(texts)). The texts: each model's greedy continuation "
        "of the first probes. ![reward tokens](reward_tokens.png)",
        "",
    ]
    rows = []
    for ex in rw["examples"]:
        up = ", ".join(f"{_q(t)} {d:+.3f}" for t, d in ex.top(3, sign=1)) or "none"
        down = ", ".join(f"{_q(t)} {d:+.3f}" for t, d in ex.top(3, sign=-1)) or "none"
        rows.append([_q(ex.text), f"{ex.score:+.3f}", up, down])
    return L + _table(["text", "score", "raise it most", "lower it most"], rows) + [""]


def load_results(out: Path) -> dict:
    return json.loads((Path(out) / "results.json").read_text())
