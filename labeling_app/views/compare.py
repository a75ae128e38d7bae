"""The comparison page: two completions of one prompt side by side; which one is better?

Keys: 1 = the left one, 2 = the right one, 0 = tie, S = skip, U = undo (click or key, a held key
counts once: ``labeling_app.keys.KeyGate``, as on the Label page). Which completion goes on the
left is a fair coin per pair and browser session (``db.shown_left``), stored with the choice so
position bias can be measured. The prompt and both completions are plain text (``st.text``).

Only the comparing part is a fragment: a press commits the choice, leases the next pair from the
pair queue (``db.next_pair``) and redraws that part alone.
"""

from __future__ import annotations

import logging
import time

import streamlit as st

import db
from common.errors import UserError
from labeling_app import display, runtime, ui
from labeling_app.keys import PAIR_SHORTCUTS, KeyGate, Verdict, pair_action, pair_choice

log = logging.getLogger(__name__)

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

PAIR_STATE = (
    "pair",
    "pair_left",
    "pair_shown_at",
    "pair_undo",
    "pair_comeback",
    "pair_last_action",
    "pair_flash",
    "pair_flash_before",
    "pair_notice",
    "pair_gate",
    "pair_session_count",
)
if state.get("pair_owner") != ctx.labeler_id:  # another person signed in in this tab: start afresh
    for name in PAIR_STATE:
        state.pop(name, None)
    state.pair_owner = ctx.labeler_id
state.setdefault("pair_undo", [])  # (comparison id, choice, left side) judged in this session, newest last
state.setdefault("pair_comeback", [])  # pairs to show again, in order, after undoing several in a row
state.setdefault("pair_last_action", None)  # ("judge", id) or ("undo", id, choice, left): for retracting
state.setdefault("pair_flash", None)  # (kind, text) about the last action
if "pair_gate" not in state:
    state.pair_gate = KeyGate(min_dwell=cfg.min_dwell_ms / 1000)

FIRST_DRAW_PAUSE_S = 0.25
NAMES = {"left": "left", "right": "right", "tie": "a tie", "skip": "skipped"}
LEASE_MESSAGES = {
    "judged": "Not saved: you already compared #{cid} in another tab. Here is your next pair.",
    "moved_on": "Not saved: #{cid} is no longer yours in this tab (another tab took over). Here is your next pair.",
    "taken": "Not saved: #{cid} was kept for you too long and went to another labeller. Here is your next pair.",
    "expired": "#{cid} was kept for you too long and went to another labeller (or another tab). Here is your next pair.",
}
shown_times = ui.get_shown_times()
TIMES_KEY = f"pairs:{key}"  # the pair's first-shown time, apart from the Label page's item


def _session_count(delta: int = 0) -> int:
    """Choices standing from this tab's session: read once (also after a reload), then kept locally."""
    if "pair_session_count" not in state:
        state.pair_session_count = db.session_pair_count(ctx.engine, ctx.labeler_id, state.session_key)
    state.pair_session_count = max(0, state.pair_session_count + delta)
    return state.pair_session_count


def _current_id() -> int | None:
    pair = state.get("pair")
    return pair.comparison_id if pair is not None else None


def _show(pair, *, fresh: bool = False) -> None:
    """Put ``pair`` on screen, its sides drawn for this session; the dwell time counts from when this
    session first showed it (a reload does not restart it), or anew after an undo (``fresh``)."""
    state.pair = pair
    now = time.monotonic()
    if pair is None:
        state.pair_left = None
        state.pair_shown_at = now
        return
    state.pair_left = db.shown_left(pair.comparison_id, state.session_key)
    state.pair_shown_at = shown_times.shown(ctx.labeler_id, TIMES_KEY, pair.comparison_id, now, fresh=fresh)


def _fetch_next() -> None:
    """The next pair: first the ones undone earlier in this session (in order), then the queue."""
    ui.check_database(ctx)
    while state.pair_comeback:
        again = db.hold_pair(
            ctx.engine,
            ctx.labeler_id,
            session_key=state.session_key,
            comparison_id=state.pair_comeback.pop(0),
            overlap=cfg.overlap,
            lease_seconds=cfg.lease_seconds,
        )
        if again is not None:
            _show(again, fresh=True)
            return
    _show(
        db.next_pair(
            ctx.engine,
            ctx.labeler_id,
            session_key=state.session_key,
            overlap=cfg.overlap,
            lease_seconds=cfg.lease_seconds,
        )
    )


def _stop_on_error(err: Exception, what: str) -> None:
    if isinstance(err, db.DatabaseGone):
        log.error("%s", err)
        state.db_gone = err
        return
    log.error("could not %s for labeller %s: %s", what, ctx.labeler_id, err, exc_info=not isinstance(err, UserError))
    state.pair_flash = ("error", f"Could not {what}; nothing was changed. Press the key again in a moment.")


def _ignored(action: str, reason: str) -> None:
    letter = PAIR_SHORTCUTS[action]
    if reason == "held":
        text = f"{letter} is held down: ignored. Release the key, then press it once."
    elif reason == "stale":
        text = f"That {letter} was for the previous pair: ignored. Look at this one, then press again."
    else:
        text = f"Too quick: {letter} ignored. Read both texts first (at least {cfg.min_dwell_ms} ms), then press again."
    state.pair_notice = text


def _record(cid: int, choice: str, left: str, seconds: float | None = None) -> None:
    db.record_pair_judgement(
        ctx.engine,
        labeler_id=ctx.labeler_id,
        comparison_id=cid,
        choice=choice,
        left_side=left,
        seconds=seconds,
        session_key=state.session_key,
        overlap=cfg.overlap,
    )


def _retract(action: str) -> None:
    """Take back the last action: it came from the first auto-repeat of a held key, not a press."""
    last = state.pair_last_action
    state.pair_last_action = None
    if last is None:
        return
    try:
        ui.check_database(ctx)
        if last[0] == "judge":  # undo that choice and show its pair again
            if state.get("pair") is not None:
                state.pair_comeback.insert(0, state.pair.comparison_id)
            undone = db.undo_last_pair(
                ctx.engine, ctx.labeler_id, session_key=state.session_key, lease_seconds=cfg.lease_seconds
            )
            if undone is not None:
                state.pair_comeback.insert(0, undone)
                if state.pair_undo and state.pair_undo[-1][0] == undone:
                    state.pair_undo.pop()
                _session_count(-1)
        else:  # an undo: store that choice again and show what was on screen before it
            _, cid, choice, left = last
            _record(cid, choice, left)
            state.pair_undo.append((cid, choice, left))
            _session_count(+1)
            if state.pair_comeback and state.pair_comeback[0] == cid:
                state.pair_comeback.pop(0)
    except Exception as err:
        _stop_on_error(err, "take back the last action")
        return
    state.pair = None
    state.pair_flash = state.get("pair_flash_before")
    state.pair_notice = f"{PAIR_SHORTCUTS[action]} is held down: ignored. Release the key, then press it once."


def _press(action: str, comparison_id: int | None) -> Verdict:
    """Every press (button or key) goes through the gate first, on the pair it was drawn with."""
    verdict = state.pair_gate.press(
        action, now=time.monotonic(), shown_at=state.get("pair_shown_at"), current=comparison_id == _current_id()
    )
    if verdict.accept:
        state.pair_notice = None
        state.pair_flash_before = state.get("pair_flash")
    if verdict.retract:
        _retract(action)
    elif not verdict.accept:
        _ignored(action, verdict.reason)
    return verdict


def _judge(comparison_id: int, action: str) -> None:
    """Button callback: commit the choice on the pair that was on screen, then move on. A press for
    a pair no longer on screen, too soon, or of a held key is ignored; the database refuses a choice
    on a pair this session no longer holds (``db.LeaseLost``)."""
    if not _press(action, comparison_id).accept:
        return
    left = state.pair_left
    choice = pair_choice(action, left)
    seconds = round(time.monotonic() - (state.get("pair_shown_at") or time.monotonic()), 3)
    try:
        ui.check_database(ctx)
        _record(comparison_id, choice, left, seconds)
    except db.LeaseLost as err:
        log.info("refused choice on %s by labeller %s: %s", comparison_id, ctx.labeler_id, err)
        state.pair_flash = ("warning", LEASE_MESSAGES[err.reason].format(cid=comparison_id))
        state.pair = None
        return
    except Exception as err:
        _stop_on_error(err, "save your choice")
        return
    state.pair_undo.append((comparison_id, choice, left))
    _session_count(+1)
    state.pair_last_action = ("judge", comparison_id)
    state.pair_flash = ("ok", f"Saved #{comparison_id} as {NAMES[action]}.")
    state.pair = None


def _undo(comparison_id: int | None) -> None:
    """Button callback: delete this session's newest choice and show that pair again (the pair on
    screen comes back after it)."""
    if not _press("undo", comparison_id).accept:
        return
    before = _current_id()
    try:
        ui.check_database(ctx)
        undone = db.undo_last_pair(
            ctx.engine, ctx.labeler_id, session_key=state.session_key, lease_seconds=cfg.lease_seconds
        )
    except Exception as err:
        _stop_on_error(err, "undo")
        return
    if undone is None:
        state.pair_flash = ("info", "Nothing to undo in this session.")
        return
    was = ""
    _session_count(-1)
    state.pair_last_action = None
    if state.pair_undo and state.pair_undo[-1][0] == undone:
        _, choice, left = state.pair_undo.pop()
        state.pair_last_action = ("undo", undone, choice, left)
        was = f" (was {NAMES[pair_action(choice, left)]})"
    if before is not None:
        state.pair_comeback.insert(0, before)
    state.pair_comeback.insert(0, undone)
    state.pair_flash = ("undo", f"Undone #{undone}{was}: it is shown again, compare it anew.")
    state.pair = None


def _flash() -> None:
    if state.get("pair_notice"):
        st.warning(state.pair_notice, icon=":material/block:")
    flash = state.get("pair_flash")
    if not flash:
        return
    kind, text = flash
    if kind == "error":
        st.error(text)
    elif kind == "warning":
        st.warning(text, icon=":material/block:")
    elif kind in ("undo", "info"):
        st.info(text, icon=":material/undo:")
    else:
        st.caption(text)


@st.fragment(run_every=runtime.heartbeat_seconds(cfg.lease_seconds))
def heartbeat() -> None:
    """Renew the lease on the pair on screen while the tab is open; when it could not be kept, the
    next pair is shown at once, with a message."""
    cid = _current_id()
    if cid is None or state.get("db_gone"):
        return
    try:
        ui.check_database(ctx)
        kept = db.extend_pair_lease(ctx.engine, ctx.labeler_id, state.session_key, cfg.lease_seconds, comparison_id=cid)
    except Exception as err:
        log.warning("comparison lease heartbeat failed: %s", err)
        return
    if not kept:
        state.pair_flash = ("warning", LEASE_MESSAGES["expired"].format(cid=cid))
        state.pair = None
        st.rerun()


def _texts(pair, left: str) -> None:
    """The prompt, then the two completions side by side, each exactly as stored (``display``)."""
    with st.container(border=True, key="pair_box"):
        st.caption(f"COMPARISON #{pair.comparison_id} · which continuation of the prompt is better? ({display.LEGEND})")
        st.text(display.visible(pair.prompt))
    texts = {"a": pair.a, "b": pair.b}
    right = "b" if left == "a" else "a"
    for col, (side, name, shortcut) in zip(
        st.columns(2), ((left, "LEFT", PAIR_SHORTCUTS["left"]), (right, "RIGHT", PAIR_SHORTCUTS["right"]))
    ):
        with col.container(border=True, key=f"pair_{name.lower()}_box"):
            st.caption(f"{name} · key {shortcut}")
            st.text(display.passage("", texts[side]))


@st.fragment
def comparing() -> None:
    if state.get("db_gone"):
        ui.database_gone_page(state.db_gone)
    if state.get("pair") is None:
        try:
            _fetch_next()
        except db.DatabaseGone as err:
            state.db_gone = err
            ui.database_gone_page(err)
        except Exception:
            log.exception("could not fetch the next comparison for labeller %s", ctx.labeler_id)
            st.error(
                "Could not load the next pair. Reload the page in a moment; if it keeps happening, "
                "tell whoever runs this app."
            )
            return
    pair = state.pair
    if pair is None:
        st.success("Nothing left for you to compare right now. Thank you! More pairs may come later.")
        st.button("Undo", key="pair-undo-none", on_click=_undo, args=(None,), shortcut=PAIR_SHORTCUTS["undo"])
        left_in_queue = 0
    else:
        cid = pair.comparison_id
        texts = st.container()  # the buttons are sent first, so a new pair's buttons are in place when it shows
        buttons = (
            ("Left is better", "left", "arrow_back"),
            ("Right is better", "right", "arrow_forward"),
            ("Tie", "tie", "drag_handle"),
            ("Skip", "skip", "skip_next"),
            ("Undo", "undo", "undo"),
        )
        for col, (label, action, icon) in zip(st.columns(len(buttons)), buttons):
            col.button(
                label,
                key=f"pair-{action}-{cid}",
                on_click=_undo if action == "undo" else _judge,
                args=(cid,) if action == "undo" else (cid, action),
                icon=f":material/{icon}:",
                shortcut=PAIR_SHORTCUTS[action],
                width="stretch",
            )
        if not state.get("pair_page_loaded"):
            # After a page load the browser needs 25-90 ms to load the buttons' code before a key reaches
            # them (measured for the Label page): the texts follow the buttons by this much, once.
            state.pair_page_loaded = True
            time.sleep(FIRST_DRAW_PAUSE_S)
        with texts:
            _texts(pair, state.pair_left)
        left_in_queue = db.pair_queue_size(ctx.engine, ctx.labeler_id, overlap=cfg.overlap)
    _flash()
    done = _session_count()
    st.caption(
        f"Compared this session: {done} · pairs left for you: {left_in_queue}",
        help="choices including ties and skips; the queue counts pairs you could still get",
    )
    if pair is None:
        st.caption("For whoever runs this app: make more pairs with `python -m db pairs make`.")


st.subheader("Compare two completions")
with st.container(border=True):
    st.caption("INSTRUCTIONS")
    st.text(cfg.instructions)
    st.text("Pick the continuation that is better by these guidelines; a tie if neither is.")
st.caption(
    "Keys: **1** left is better · **2** right is better · **0** tie · **S** skip · **U** undo "
    "(no need to click into the page first). One press per pair; a held key counts once."
)
comparing()
heartbeat()
