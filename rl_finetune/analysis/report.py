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
from rl_finetune.analysis import figures
from rl_finetune.analysis.hooks import parts, run_with_cache
from rl_finetune.analysis.measures import attribution, logit_lens, patching, prompt_stats, weight_change

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
    ids = tok(prompt, add_special_tokens=True).input_ids
    if not prompt.strip() or not ids:
        raise UserError(f"the prompt {prompt!r} tokenises to nothing.", "give prompts with some text in them.")
    return torch.tensor([ids])


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
) -> dict:
    """Analyse ``tuned`` against ``base`` (loaded models sharing ``tok``); write the report into ``out``
    atomically and return the figures as a dict."""
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

    for prompt, ids in zip(probes, enc):
        cb, ct = run_with_cache(base, pb, ids), run_with_cache(tuned, pt, ids)
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
    res["patch"] = patching(
        base,
        pb,
        run_with_cache(tuned, pt, enc[0]),
        enc[0],
        pos_ids,
        neg_ids,
        ab.actual,
        at.actual,
        head_layers=res["head_layers"],
    )
    res["patch_tokens"] = [tok.decode([int(i)]) for i in enc[0][0]]
    if prompts:
        encoded = [encode(tok, p) for p in prompts]
        res["stats"] = prompt_stats(base, pb, tuned, pt, encoded, pos_ids, neg_ids)
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
        return {k: _jsonable(getattr(obj, k)) for k in obj.__dataclass_fields__} | {"error": obj.error}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ------------------------------------------------------------------------------ the markdown


def _f(x: float, nd: int = 3) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:+.{nd}f}"


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.0f}%"


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
    lines.append(
        "- Direct logit attribution of the change (this prompt): "
        + ", ".join(f"{c} {_f(v)}" for c, v in top)
        + f" of a total {_f(at.actual - ab.actual)}."
    )
    if "stats" in res:
        lay = res["stats"]["layer"]
        i = int(np.argmax([abs(m[0]) for m in lay]))
        lines.append(f"- Over the prompts, block {i} changes the attribution most: {_ci(lay[i])}.")
    heads = at.heads - ab.heads
    flat = sorted(((abs(heads[li, h]), li, h) for li in range(n) for h in range(res["n_heads"])), reverse=True)[:3]
    lines.append(
        "- Heads with the largest attribution change: "
        + ", ".join(f"L{li}H{h} {_f(heads[li, h])}" for _, li, h in flat)
        + "."
    )
    pr = res["patch"]
    if np.isfinite(pr["resid"]).any():
        i = int(np.nanargmax(pr["resid"]))
        g = pr["grid"]
        li, t = np.unravel_index(np.nanargmax(g), g.shape)
        lines.append(
            f"- Patching base ← tuned at the last position: block {i}'s output recovers {_pct(pr['resid'][i])} of the gap; "
            f"the strongest single (block, position) is block {li} at {res['patch_tokens'][t]!r} ({_pct(g[li, t])}); "
            f"all blocks at every position: {_pct(pr['all'])}."
        )
    else:
        lines.append("- Patching: no logit gap on this prompt, nothing to recover.")
    moved = [i for i in range(n) if max(res["weights"][f"layer {i}"].values()) > 0]
    lines.append(
        "- Weights: no block changed."
        if not moved
        else f"- Weights moved in blocks {_ranges(moved)}; unchanged (frozen) in {_ranges(sorted(set(range(n)) - set(moved))) or 'none'}."
    )
    worst = max(max(p["attr"]["base"].error, p["attr"]["tuned"].error) for p in res["probes"])
    worst = max(worst, res.get("stats", {}).get("max_error", 0.0))
    lines.append(
        f"- Check: the attribution terms add up to each model's own logit difference within {worst:.1e} "
        f"({'OK' if worst < 1e-3 else 'FAILED: the decomposition is wrong for this model'})."
    )
    return lines


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
    return "\n".join(L)


def load_results(out: Path) -> dict:
    return json.loads((Path(out) / "results.json").read_text())
