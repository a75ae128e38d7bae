"""The stats page's comparisons part: pairwise agreement, position bias and win rates between versions.

The figures come from ``db.pair_stats`` (computed in ``db/pairs.py``); this module only lays them
out. Position bias is the share of decisive choices (left or right, not tie or skip) that picked
the completion shown on the left: about 0.5 when labellers read both. A win rate counts a tie as
half a win, with Wilson's 95% interval.
"""

from __future__ import annotations

from collections.abc import Mapping

import streamlit as st


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def interval_text(interval: list[float] | tuple[float, float]) -> str:
    """``[0.41, 0.73]`` as ``41–73%``."""
    lo, hi = interval
    return f"{lo * 100:.0f}–{hi:.0%}"


def win_rate_rows(win_rates: list[dict], names: Mapping[int, str]) -> list[dict]:
    """One table row per pair of versions: which beat which how often, with the interval (pure)."""
    out = []
    for wr in win_rates:
        out.append(
            {
                "version": names.get(wr["version"], f"#{wr['version']}"),
                "against": names.get(wr["other"], f"#{wr['other']}"),
                "comparisons": wr["n"],
                "wins": wr["wins"],
                "losses": wr["losses"],
                "ties": wr["ties"],
                "win rate": _pct(wr["win_rate"]),
                "95% interval": interval_text(wr["interval"]) if wr["n"] else "–",
            }
        )
    return out


def render_pair_stats(ctx) -> None:
    """The comparisons section of the stats page (a caption when nothing has been compared yet)."""
    import db

    st.markdown("#### Comparisons")
    figures = db.pair_stats(ctx.engine)
    if not figures["pair_judgements"]:
        st.caption(
            f"{figures['comparisons']} pair(s) to compare, none compared yet: the Compare page shows them "
            "(`python -m db pairs make` makes pairs of two completions of one prompt)."
        )
        return
    agreement, bias = figures["agreement"], figures["position_bias"]
    c = st.columns(4)
    c[0].metric("Pair judgements", figures["pair_judgements"])
    c[1].metric("Compared pairs", f"{figures['judged_comparisons']} of {figures['comparisons']}")
    c[2].metric(
        "Agreement",
        _pct(agreement["agreement"]),
        help="over every two labellers who compared the same pair (skips left out): the share that chose "
        f"the same (left, right or tie); {agreement['n']} such pairs"
        + (f", 95% interval {interval_text(agreement['interval'])}" if agreement["n"] else ""),
    )
    c[3].metric(
        "Share of 'left'",
        _pct(bias["share_left"]),
        help="position bias: of the choices of one side, the share that picked the one shown on the left "
        f"(about 50% when both are read); {bias['n']} choices"
        + (f", 95% interval {interval_text(bias['interval'])}" if bias["n"] else ""),
    )
    st.caption(
        "Choices: "
        + " · ".join(f"{name} {figures['by_choice'][key]}" for key, name in (("a", "A"), ("b", "B"), ("tie", "tie")))
        + f" · skip {figures['by_choice']['skip']}"
    )
    if figures["win_rates"]:
        names = {v.id: v.name for v in db.list_model_versions(ctx.engine, "policy")}
        st.markdown("##### Win rate between policy versions")
        st.dataframe(win_rate_rows(figures["win_rates"], names), hide_index=True, width="stretch")
        st.caption("A tie counts as half a win; the interval is Wilson's at that rate.")
    else:
        st.caption(
            "No pair sets two policy versions against each other yet (`python -m db pairs make --versions A B`)."
        )
