"""The stats page: who labelled how much, how fast, how consistently, and how good the reward models are."""

from __future__ import annotations

import streamlit as st

import db
from labeling_app import metrics, ui

ctx = ui.context()

st.subheader("Labelling statistics")
frame = db.judgements_frame(ctx.engine)
summary = db.stats(ctx.engine)

c = st.columns(4)
c[0].metric("Judgements", len(frame))
c[1].metric("Labellers", frame["labeler"].nunique() if len(frame) else 0)
judged = frame[frame["label"].isin(["good", "bad"])] if len(frame) else frame
c[2].metric("Good rate", f"{(judged['label'] == 'good').mean():.0%}" if len(judged) else "–")
c[3].metric("Completions", summary.get("completions", "–"))

if frame.empty:
    st.info("No judgements yet. Label a few items on the Label page and come back.")
    st.stop()

st.markdown("#### Per labeller")
st.dataframe(
    metrics.per_labeller(frame).merge(metrics.labeller_reliability(frame)[["labeller", "reliability"]], how="left"),
    hide_index=True,
    width="stretch",
    column_config={
        "good_rate": st.column_config.NumberColumn("good rate", format="%.2f"),
        "labels_per_hour": st.column_config.NumberColumn("labels / hour"),
        "median_seconds": st.column_config.NumberColumn("median s / item"),
        "reliability": st.column_config.TextColumn(
            "reliability", help="Dawid-Skene accuracy on shared items; unknown without overlap"
        ),
    },
)

st.markdown("#### Labels over time (cumulative)")
st.line_chart(metrics.labels_over_time(frame))

st.markdown("#### Agreement on overlapping items")
pairs = metrics.pairwise_kappa(frame)
if pairs.empty:
    st.caption(
        "No item has been judged good/bad by two labellers yet. Set `label.overlap` to 2 or more "
        "so several labellers see the same items."
    )
else:
    mean = metrics.mean_kappa(pairs)
    st.metric("Cohen's kappa (mean over pairs, weighted by shared items)", f"{mean:.2f}" if mean is not None else "–")
    st.dataframe(pairs, hide_index=True, width="stretch")

st.markdown("#### Reward models")
versions = db.list_model_versions(ctx.engine, "reward")
acc = metrics.reward_accuracy(versions)
if acc.empty:
    st.caption("No reward model yet: `make reward-model` trains one from these labels.")
else:
    if acc["accuracy"].notna().sum() >= 2:
        st.line_chart(acc.set_index("created_at")[["accuracy"]])
    st.dataframe(acc, hide_index=True, width="stretch")
