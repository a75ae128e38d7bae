"""The analysis page: the figures of the latest "what did RL change inside the model" report.

Read-only. It lists the report folders that ``python -m rl_finetune analyse`` (``make analyse``) wrote
under ``$RLHF_ARTIFACTS/analysis/`` (newest first) and shows one: its headline, its PNGs and its
tables from ``results.json``. The report holds model text (prompts, continuations, tokens), so
everything that comes from it is shown with ``st.text``, ``st.image`` and ``st.dataframe`` only, never
as Markdown or HTML (docs/security.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from common.paths import artifacts_root

#: The report's figures, in the report's order, with a caption each.
FIGURES = [
    ("lens.png", "Logit lens: the logit difference per layer for both models, and their divergence"),
    ("attribution.png", "Direct logit attribution per block (attention, MLP), each model with its own unembedding"),
    ("heads.png", "Per-head attribution change (tuned − base)"),
    ("patching.png", "Activation patching base ← tuned on the first probe: per block, and per block and position"),
    ("positions.png", "Patching per block and position, and per head and position, over all probes"),
    ("weights.png", "Weight change ‖tuned − base‖ / ‖base‖ per block and module"),
    ("stats.png", "Attribution change per block over many prompts (mean, 95% CI)"),
    ("reward_tokens.png", "The reward model's token attribution (occlusion)"),
]


def reports(root: Path) -> list[Path]:
    """Report folders under ``root`` (those with a ``results.json``), newest first."""
    if not root.is_dir():
        return []
    found = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and (d / "results.json").is_file()]
    return sorted(found, key=lambda d: (d / "results.json").stat().st_mtime, reverse=True)


def read_results(folder: Path) -> dict | None:
    """The report's ``results.json``, or None when it cannot be read."""
    try:
        data = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def patching_frame(res: dict) -> pd.DataFrame:
    """Per block, the fraction of the gap recovered at the last position of the first probe."""
    pr = res.get("patch") or {}
    n = res.get("n_layers", 0)
    return pd.DataFrame(
        {
            "block": list(range(n)),
            "block output": [pct(v) for v in pr.get("resid", [None] * n)],
            "attention": [pct(v) for v in pr.get("attn", [None] * n)],
            "MLP": [pct(v) for v in pr.get("mlp", [None] * n)],
        }
    )


def weights_frame(res: dict) -> pd.DataFrame:
    rows = [{"where": where, **groups} for where, groups in (res.get("weights") or {}).items()]
    return pd.DataFrame(rows)


def next_token_frame(probe: dict) -> pd.DataFrame:
    nx = probe.get("next") or {}
    return pd.DataFrame(
        {
            "base next token": [repr(t) for t, _ in nx.get("base", [])],
            "base p": [p for _, p in nx.get("base", [])],
            "tuned next token": [repr(t) for t, _ in nx.get("tuned", [])],
            "tuned p": [p for _, p in nx.get("tuned", [])],
        }
    )


def reward_frame(example: dict) -> pd.DataFrame:
    return pd.DataFrame({"token": [repr(t) for t in example.get("tokens", [])], "Δ score": example.get("deltas", [])})


st.subheader("What did RL change inside the model?")
root = artifacts_root() / "analysis"
folders = reports(root)
if not folders:
    st.info("No analysis report yet.")
    st.text(f"Write one with: make analyse BASE=<start policy> TUNED=<tuned policy>  (into {root})")
    st.stop()

chosen = st.selectbox("Report", folders, format_func=lambda d: d.name, key="analysis_report")
res = read_results(chosen)
if res is None:
    st.warning("This report's results.json cannot be read. Write the report again with make analyse.")
    st.stop()

st.text(f"tuned: {res.get('tuned')}\nbase:  {res.get('base')}")
st.text(f"{res.get('family')} layout, {res.get('n_layers')} blocks × {res.get('n_heads')} heads")
st.markdown("#### Headline")
st.text("\n".join(res.get("headline") or ["(this report has no headline; write it again with make analyse)"]))

st.markdown("#### Figures")
for name, caption in FIGURES:
    if (chosen / name).is_file():
        st.image(str(chosen / name), caption=caption)

probes = res.get("probes") or []
if probes:
    st.markdown("#### Next token, before and after")
    i = st.selectbox("Probe", range(len(probes)), format_func=lambda k: f"probe {k + 1}", key="analysis_probe")
    st.text(f"prompt: {probes[i].get('prompt')!r}")
    probe = probes[i]
    for model in ("base", "tuned"):
        st.text(f"{model} greedy: {probe.get('behaviour', {}).get(model, {}).get('greedy', '')!r}")
    st.dataframe(next_token_frame(probe), hide_index=True, width="stretch")

st.markdown("#### Activation patching, first probe, last position")
st.dataframe(patching_frame(res), hide_index=True, width="stretch")

st.markdown("#### Weight change")
st.dataframe(weights_frame(res), hide_index=True, width="stretch")

reward = res.get("reward")
if reward:
    st.markdown("#### The reward model's token attribution")
    st.text(f"reward model: {reward.get('model_dir')}  (score: {reward.get('kind')}, occlusion)")
    for k, ex in enumerate(reward.get("examples", [])):
        st.text(f"{ex.get('text')!r}  score {ex.get('score', float('nan')):+.3f}")
        st.dataframe(reward_frame(ex), hide_index=True, width="stretch", key=f"reward_{k}")

st.text(f"From {chosen} (report.md there is the full report).")
