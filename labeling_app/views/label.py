"""The labelling page: one completion at a time, Good / Bad / Skip / Undo by click or key.

Only the labelling part is a fragment, so a judgement reruns that part alone (the sidebar,
the navigation and the instructions stay as they are): the judgement is committed, the next
item (already generated and waiting in the database) is leased and drawn.
"""

from __future__ import annotations

import time

import streamlit as st

import db
from labeling_app import runtime, ui

ctx = ui.context()
cfg = ctx.cfg
state = st.session_state

# ---------------------------------------------------------------------------- session key (per tab)
key = state.get("session_key")
if key is None:
    from_url = st.query_params.get(runtime.SESSION_PARAM)
    key = from_url if runtime.valid_session_key(from_url) else runtime.new_session_key()
    state.session_key = key
if st.query_params.get(runtime.SESSION_PARAM) != key:
    st.query_params[runtime.SESSION_PARAM] = key
if st.query_params.get(runtime.LABELER_PARAM) != ctx.labeler_name:
    st.query_params[runtime.LABELER_PARAM] = ctx.labeler_name

state.setdefault("undo_stack", [])  # (completion id, label) judged in this session, newest last
state.setdefault("flash", None)  # (kind, text) about the last action

SHORTCUTS = {"good": "G", "bad": "B", "skip": "S", "undo": "U"}


def _counts() -> dict:
    """This labeller's judgements today and in total (read once, then kept up to date locally)."""
    if "counts" not in state:
        state.counts = runtime.labeler_progress(ctx.engine, ctx.labeler_id)
    return state.counts


def _show(item) -> None:
    state.item = item
    state.shown_at = time.monotonic()


def _fetch_next() -> None:
    _show(
        db.next_item(
            ctx.engine,
            ctx.labeler_id,
            session_key=state.session_key,
            overlap=cfg.overlap,
            order=cfg.order,
            lease_seconds=cfg.lease_seconds,
        )
    )


def _judge(completion_id: int, label: str) -> None:
    """Button callback: commit the judgement of the item that was on screen, then move on.

    Keyed by the item shown: a click or key press that arrives for an item no longer on screen
    (a double click, a held key) is ignored, and the db upsert makes a repeat harmless anyway.
    """
    item = state.get("item")
    if item is None or item.completion_id != completion_id:
        return
    seconds = round(time.monotonic() - state.get("shown_at", time.monotonic()), 3)
    try:
        db.record_judgement(
            ctx.engine, labeler_id=ctx.labeler_id, completion_id=completion_id, label=label, seconds=seconds
        )
    except Exception as err:  # keep the item on screen; nothing was lost
        state.flash = ("error", f"Could not save your judgement ({type(err).__name__}: {err}). Press the key again.")
        return
    counts = _counts()
    counts["today"] += 1
    counts["total"] += 1
    state.undo_stack.append((completion_id, label))
    state.flash = ("ok", f"Saved #{completion_id} as {label}.")
    state.item = None  # the fragment leases and draws the next item


def _undo() -> None:
    """Button callback: delete this labeller's newest judgement and show that item again.

    ``db.undo_last`` leases the item back to this tab, so the next fetch shows it again."""
    try:
        completion_id = db.undo_last(
            ctx.engine, ctx.labeler_id, session_key=state.session_key, lease_seconds=cfg.lease_seconds
        )
    except Exception as err:
        state.flash = ("error", f"Could not undo ({type(err).__name__}: {err}).")
        return
    if completion_id is None:
        state.flash = ("info", "Nothing to undo.")
        return
    if state.undo_stack and state.undo_stack[-1][0] == completion_id:
        state.undo_stack.pop()
        counts = _counts()
        counts["today"] = max(0, counts["today"] - 1)
        counts["total"] = max(0, counts["total"] - 1)
    else:  # judged in another tab or before a reload: recount
        state.pop("counts", None)
    state.flash = ("info", f"Undone #{completion_id}: judge it again.")
    state.item = None


def _flash() -> None:
    flash = state.get("flash")
    if not flash:
        return
    kind, text = flash
    if kind == "error":
        st.error(text)
    else:
        st.caption(text)


@st.fragment
def labelling() -> None:
    if state.get("item") is None:
        try:
            _fetch_next()
        except Exception as err:  # e.g. the database went away: say so, keep the page
            st.error(f"Could not fetch the next item ({type(err).__name__}: {err}). Reload the page to retry.")
            return
    item = state.item
    if item is None:
        st.success("Nothing left for you to label right now.")
        st.button("Undo", key="undo", on_click=_undo, shortcut=SHORTCUTS["undo"])
        left = 0
    else:
        cid = item.completion_id
        # The buttons are sent before the texts (into a container placed above them), so by the
        # time a new item is visible its buttons, which carry its id, are already in place.
        texts = st.container()
        cols = st.columns(4)
        cols[0].button(
            "Good",
            key=f"good-{cid}",
            on_click=_judge,
            args=(cid, "good"),
            type="primary",
            icon=":material/thumb_up:",
            shortcut=SHORTCUTS["good"],
            width="stretch",
        )
        cols[1].button(
            "Bad",
            key=f"bad-{cid}",
            on_click=_judge,
            args=(cid, "bad"),
            icon=":material/thumb_down:",
            shortcut=SHORTCUTS["bad"],
            width="stretch",
        )
        cols[2].button(
            "Skip",
            key=f"skip-{cid}",
            on_click=_judge,
            args=(cid, "skip"),
            icon=":material/skip_next:",
            shortcut=SHORTCUTS["skip"],
            width="stretch",
        )
        cols[3].button(
            "Undo", key="undo", on_click=_undo, shortcut=SHORTCUTS["undo"], width="stretch", icon=":material/undo:"
        )
        with texts:
            with st.container(border=True, key="prompt_box"):
                st.caption("PROMPT (the opening the model was given)")
                st.text(item.prompt)
            with st.container(border=True, key="completion_box"):
                st.caption(f"COMPLETION #{cid} (judge this part)")
                st.text(item.completion)
        left = db.queue_size(ctx.engine, ctx.labeler_id, overlap=cfg.overlap)
    _flash()
    counts = _counts()
    st.caption(
        f"You today: {counts['today']} · you in total: {counts['total']} · left in the queue: {left}",
        help="judgements including skips; the queue counts items you could still get",
    )
    message = runtime.maybe_refill(ui.get_refiller(ctx.url), ctx.engine, cfg, left)
    if message:
        st.caption(message)
    if item is None:
        st.caption("More completions: `python -m base_policy generate`, or **Refill the queue** on the Data page.")


st.subheader("Label completions")
with st.container(border=True):
    st.caption("INSTRUCTIONS")
    st.text(cfg.instructions)
st.caption("Keys: **G** good · **B** bad · **S** skip · **U** undo (no need to click into the page first)")
labelling()
