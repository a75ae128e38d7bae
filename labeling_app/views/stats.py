"""The stats page: who labelled how much, how fast, how consistently, and how good the reward models are."""

from __future__ import annotations

import streamlit as st

import db
from labeling_app import metrics, pair_stats, ui

ctx = ui.context()


def own_figures(frame) -> None:
    """A labeller's view: their progress, good rate and agreement with the others (without names)."""
    mine = frame[frame["labeler_id"] == ctx.labeler_id]
    st.caption("Your own figures. Everyone's are shown to admins.")
    judged = mine[mine["label"].isin(["good", "bad"])]
    pairs = metrics.pairwise_kappa(frame)
    names = set(mine["labeler"])
    own = pairs[pairs["labeller_a"].isin(names) | pairs["labeller_b"].isin(names)] if len(pairs) else pairs
    kappa = metrics.mean_kappa(own) if len(own) else None
    c = st.columns(3)
    c[0].metric("Your judgements", len(mine))
    c[1].metric("Your good rate", f"{(judged['label'] == 'good').mean():.0%}" if len(judged) else "–")
    c[2].metric(
        "Your agreement with others",
        f"{kappa:.2f}" if kappa is not None else "–",
        help="Cohen's kappa with the other labellers on items you both judged, weighted by shared items",
    )
    if mine.empty:
        st.info("No judgements yet. Label a few items on the Label page and come back.")
        return
    st.line_chart(metrics.labels_over_time(mine))


st.subheader("Labelling statistics")
frame = db.judgements_frame(ctx.engine)
if not ui.is_admin(ctx):  # a labeller sees their own figures only (checked on the server, every run)
    own_figures(frame)
    st.stop()
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

pair_stats.render_pair_stats(ctx)
