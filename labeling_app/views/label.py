"""The labelling page: one completion at a time, Good / Bad / Skip / Undo by click or key.

Only the labelling part is a fragment, so a judgement reruns that part alone (the sidebar,
the navigation and the instructions stay as they are): the judgement is committed, the next
item (already generated and waiting in the database) is leased and drawn.
"""

from __future__ import annotations

import logging
import time

import streamlit as st

import db
from common.errors import UserError
from labeling_app import display, runtime, ui
from labeling_app.keys import KeyGate, Verdict

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

state.setdefault("undo_stack", [])  # (completion id, label, flag, comment) judged in this session, newest last
state.setdefault("comeback", [])  # items to show again, in order, after undoing several in a row
state.setdefault("last_action", None)  # ("judge", id, ...) or ("undo", id, label, flag, comment): for retracting
state.setdefault("flash", None)  # (kind, text) about the last action
if "gate" not in state:
    state.gate = KeyGate(min_dwell=cfg.min_dwell_ms / 1000)

SHORTCUTS = {"good": "G", "bad": "B", "skip": "S", "undo": "U"}
FIRST_DRAW_PAUSE_S = 0.25  # after a page load, the item's text follows its buttons by this much
# Said to the labeller when a judgement is refused because the item is no longer theirs.
LEASE_MESSAGES = {
    "judged": "Not saved: you already judged #{cid} in another tab. Here is your next item.",
    "moved_on": "Not saved: #{cid} is no longer yours in this tab (another tab took over). Here is your next item.",
    "taken": "Not saved: #{cid} was kept for you too long and went to another labeller. Here is your next item.",
    "expired": "#{cid} was kept for you too long and went to another labeller (or another tab). Here is your next item.",
}
FLAG_NAMES = {"offensive": "Offensive", "broken_text": "Broken text"}
assert set(FLAG_NAMES) == set(db.FLAGS)
shown_times = ui.get_shown_times()


def _counts() -> dict:
    """This labeller's judgements today and in total (read once, then kept up to date locally)."""
    if "counts" not in state:
        state.counts = runtime.labeler_progress(ctx.engine, ctx.labeler_id)
    return state.counts


def _session_count() -> int:
    """Judgements standing from this tab's session (read once, also after a reload; then kept locally)."""
    if "session_count" not in state:
        state.session_count = db.session_judgement_count(ctx.engine, ctx.labeler_id, state.session_key)
    return state.session_count


def _count(delta: int) -> None:
    counts = _counts()
    counts["today"] = max(0, counts["today"] + delta)
    counts["total"] = max(0, counts["total"] + delta)
    if "session_count" in state:  # else read when next shown, with this judgement in it
        state.session_count = max(0, state.session_count + delta)


def _show(item, *, fresh: bool = False) -> None:
    """Put ``item`` on screen. The dwell time counts from when this session first showed it, so a
    reload of the tab (a new Streamlit session resuming the same lease) does not restart it; an item
    shown again after an undo (``fresh``) starts anew."""
    state.item = item
    now = time.monotonic()
    if item is None:
        state.shown_at = now
    else:
        state.shown_at = shown_times.shown(ctx.labeler_id, state.session_key, item.completion_id, now, fresh=fresh)


def _note(completion_id: int) -> tuple[str | None, str | None]:
    """The flag and comment given with ``completion_id`` (the widgets belong to the item they were
    drawn with, ``note_for``; a press for another item carries none)."""
    if state.get("note_for") != completion_id:
        return None, None
    comment = state.get("note_comment")
    return state.get("note_flag"), comment if comment and comment.strip() else None


def _set_note(completion_id: int, flag: str | None, comment: str | None) -> None:
    """Show ``flag`` and ``comment`` again when ``completion_id`` is next drawn (after an undo)."""
    state.setdefault("restore_note", {})[completion_id] = (flag, comment or "")


def _note_widgets(cid: int) -> None:
    """The optional flag and comment for item ``cid``: empty for a new item, or what was given with it
    before an undo."""
    if state.get("note_for") != cid:  # a new item: set the widgets' values before they are drawn
        state.note_flag, state.note_comment = state.setdefault("restore_note", {}).pop(cid, (None, ""))
        state.note_for = cid
    flag_col, comment_col = st.columns([2, 3], vertical_alignment="bottom")
    flag_col.pills(
        "Flag (optional)",
        list(db.FLAGS),
        format_func=FLAG_NAMES.get,
        key="note_flag",
        help="Stored with your judgement, e.g. for text that should not be used at all.",
    )
    comment_col.text_input(
        "Comment (optional)",
        key="note_comment",
        max_chars=db.COMMENT_MAX,
        placeholder="anything worth knowing about this item",
        help="Stored with your judgement. While you type here the keys type too: click a button, "
        "or click outside the box to use the keys again.",
    )


def _described(label: str | None, flag: str | None, comment: str | None) -> str:
    parts = [label] if label else []
    if flag:
        parts.append(f"flagged {FLAG_NAMES[flag].lower()}")
    if comment:
        parts.append("with a comment")
    return ", ".join(parts)


def _fetch_next() -> None:
    """The next item: first the ones undone earlier in this session (in order), then the queue."""
    ui.check_database(ctx)
    while state.comeback:
        again = db.hold_item(
            ctx.engine,
            ctx.labeler_id,
            session_key=state.session_key,
            completion_id=state.comeback.pop(0),
            overlap=cfg.overlap,
            lease_seconds=cfg.lease_seconds,
        )
        if again is not None:
            _show(again, fresh=True)
            return
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


def _stop_on_error(err: Exception, what: str) -> None:
    """Plain words for the labeller; the details go to the server log."""
    if isinstance(err, db.DatabaseGone):
        log.error("%s", err)
        state.db_gone = err
        return
    log.error("could not %s for labeller %s: %s", what, ctx.labeler_id, err, exc_info=not isinstance(err, UserError))
    state.flash = ("error", f"Could not {what}; nothing was changed. Press the key again in a moment.")


def _ignored(key: str, reason: str) -> None:
    letter = SHORTCUTS[key]
    if reason == "held":
        text = f"{letter} is held down: ignored. Release the key, then press it once."
    elif reason == "stale":
        text = f"That {letter} was for the previous item: ignored. Look at this one, then press again."
    else:
        text = f"Too quick: {letter} ignored. Read the item first (at least {cfg.min_dwell_ms} ms), then press again."
    state.notice = text  # shown beside the last action's message, which stays


def _retract(key: str) -> None:
    """Take back the last action: it came from the first auto-repeat of a held key, not a press."""
    action = state.last_action
    state.last_action = None
    if action is None:
        return
    try:
        ui.check_database(ctx)
        if action[0] == "judge":  # undo that judgement and show its item again
            if state.get("item") is not None:
                state.comeback.insert(0, state.item.completion_id)
            undone = db.undo_last(
                ctx.engine, ctx.labeler_id, session_key=state.session_key, lease_seconds=cfg.lease_seconds
            )
            if undone is not None:
                state.comeback.insert(0, undone)  # shown again now (it is leased back to this session)
                if state.undo_stack and state.undo_stack[-1][0] == undone:
                    _, _, flag, comment = state.undo_stack.pop()
                    _set_note(undone, flag, comment)
                _count(-1)
        else:  # an undo: store that judgement again and show what was on screen before it
            _, cid, label, flag, comment = action
            db.record_judgement(
                ctx.engine,
                labeler_id=ctx.labeler_id,
                completion_id=cid,
                label=label,
                session_key=state.session_key,
                overlap=cfg.overlap,
                flag=flag,
                comment=comment,
            )
            state.undo_stack.append((cid, label, flag, comment))
            _count(+1)
            if state.comeback and state.comeback[0] == cid:
                state.comeback.pop(0)
            # ``before``, shown before the undo, is now first in line again
    except Exception as err:
        _stop_on_error(err, "take back the last action")
        return
    state.item = None
    letter = SHORTCUTS[key]
    state.flash = state.get("flash_before")  # the message of the press that counted
    state.notice = f"{letter} is held down: ignored. Release the key, then press it once."


def _press(key: str, completion_id: int | None) -> Verdict:
    """Every press (button or key) goes through the gate first, on the item it was drawn with."""
    item = state.get("item")
    on_screen = item.completion_id if item is not None else None
    verdict = state.gate.press(
        key, now=time.monotonic(), shown_at=state.get("shown_at"), current=completion_id == on_screen
    )
    if verdict.accept:
        state.notice = None
        state.flash_before = state.get("flash")  # what to show again if this action is taken back
    if verdict.retract:
        _retract(key)
    elif not verdict.accept:
        _ignored(key, verdict.reason)
    return verdict


def _judge(completion_id: int, label: str) -> None:
    """Button callback: commit the judgement of the item that was on screen, then move on.

    Keyed by the item shown: a press for an item no longer on screen (a double click, a held key)
    is ignored, and so is one too soon after the item appeared or a held key (``KeyGate``). The
    database refuses a judgement of an item this session no longer holds (``db.LeaseLost``)."""
    if not _press(label, completion_id).accept:
        return
    seconds = round(time.monotonic() - (state.get("shown_at") or time.monotonic()), 3)
    flag, comment = _note(completion_id)
    try:
        flag, comment = db.check_note(flag, comment)  # as stored: stripped, blank = none
    except UserError as err:  # e.g. a comment with a character no database stores
        state.flash = ("error", f"Not saved: {err.problem} Please {err.fix}")
        return
    try:
        ui.check_database(ctx)
        db.record_judgement(
            ctx.engine,
            labeler_id=ctx.labeler_id,
            completion_id=completion_id,
            label=label,
            seconds=seconds,
            session_key=state.session_key,
            overlap=cfg.overlap,
            flag=flag,
            comment=comment,
        )
    except db.LeaseLost as err:
        log.info("refused judgement of %s by labeller %s: %s", completion_id, ctx.labeler_id, err)
        state.flash = ("warning", LEASE_MESSAGES[err.reason].format(cid=completion_id))
        state.item = None
        return
    except Exception as err:  # keep the item on screen; nothing was lost
        _stop_on_error(err, "save your judgement")
        return
    _count(+1)
    state.undo_stack.append((completion_id, label, flag, comment))
    state.last_action = ("judge", completion_id)
    state.flash = ("ok", f"Saved #{completion_id} as {_described(label, flag, comment)}.")
    state.item = None  # the fragment leases and draws the next item


def _undo(completion_id: int | None) -> None:
    """Button callback: delete this session's newest judgement and show that item again.

    One judgement per fresh press; the item on screen goes first in line to come back after it,
    so undoing several in a row then shows each item again, in order."""
    if not _press("undo", completion_id).accept:
        return
    before = state.item.completion_id if state.get("item") is not None else None
    try:
        ui.check_database(ctx)
        undone = db.undo_last(
            ctx.engine, ctx.labeler_id, session_key=state.session_key, lease_seconds=cfg.lease_seconds
        )
    except Exception as err:
        _stop_on_error(err, "undo")
        return
    if undone is None:
        state.flash = ("info", "Nothing to undo in this session.")
        return
    label = flag = comment = None
    if state.undo_stack and state.undo_stack[-1][0] == undone:
        _, label, flag, comment = state.undo_stack.pop()
        _set_note(undone, flag, comment)  # what was given with it is shown again, to keep or change
    _count(-1)
    if before is not None:
        if any(_note(before)):  # a flag or comment already given on the item on screen waits with it
            _set_note(before, *_note(before))
        state.comeback.insert(0, before)
    state.comeback.insert(0, undone)  # shown now (leased back to this session), then ``before``
    state.last_action = ("undo", undone, label, flag, comment) if label else None
    was = f" (was {_described(label, flag, comment)})" if label else ""
    state.flash = ("undo", f"Undone #{undone}{was}: it is shown again, judge it anew.")
    state.item = None


def _flash() -> None:
    if state.get("notice"):
        st.warning(state.notice, icon=":material/block:")
    flash = state.get("flash")
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
    """Renew the lease on the item on screen while the tab is open (a closed tab stops renewing, so
    its item is free again within ``lease_seconds``). When the item could not be kept (the tab slept
    past its lease and someone else took it), the next item is shown at once, with a message."""
    item = state.get("item")
    if item is None or state.get("db_gone"):
        return
    try:
        ui.check_database(ctx)
        kept = db.extend_lease(
            ctx.engine, ctx.labeler_id, state.session_key, cfg.lease_seconds, completion_id=item.completion_id
        )
    except Exception as err:  # the next key press reports it; never break the page from here
        log.warning("lease heartbeat failed: %s", err)
        return
    if not kept:
        log.info("labeller %s lost the lease on %s", ctx.labeler_id, item.completion_id)
        state.flash = ("warning", LEASE_MESSAGES["expired"].format(cid=item.completion_id))
        state.item = None
        st.rerun()


@st.fragment
def labelling() -> None:
    if state.get("db_gone"):
        ui.database_gone_page(state.db_gone)
    if state.get("item") is None:
        try:
            _fetch_next()
        except db.DatabaseGone as err:
            state.db_gone = err
            ui.database_gone_page(err)
        except Exception:  # e.g. the server went away: say so, keep the page
            log.exception("could not fetch the next item for labeller %s", ctx.labeler_id)
            st.error(
                "Could not load the next item. Reload the page in a moment; if it keeps happening, tell whoever runs this app."
            )
            return
    item = state.item
    refiller = ui.get_refiller(ctx.url)
    if item is None:
        st.success("Nothing left for you to label right now. Thank you! More items may come later.")
        st.button("Undo", key="undo-none", on_click=_undo, args=(None,), shortcut=SHORTCUTS["undo"])
        left = 0
    else:
        cid = item.completion_id
        # The buttons are sent before the texts (into a container placed above them), so by the
        # time a new item is visible its buttons, which carry its id, are already in place.
        texts = st.container()
        buttons = (  # (label, action, icon): one button per key, its widget key carrying the item's id
            (":green[Good]", "good", "thumb_up"),  # green, not the theme's red primary
            ("Bad", "bad", "thumb_down"),
            ("Skip", "skip", "skip_next"),
            ("Undo", "undo", "undo"),
        )
        for col, (label, action, icon) in zip(st.columns(len(buttons)), buttons):
            col.button(
                label,
                key=f"{action}-{cid}",
                on_click=_undo if action == "undo" else _judge,
                args=(cid,) if action == "undo" else (cid, action),
                icon=f":material/{icon}:",
                shortcut=SHORTCUTS[action],
                width="stretch",
            )
        if not state.get("page_loaded"):
            # The first draw after a page load: the browser needs 25-90 ms (measured) to load the button
            # code before a key reaches a button, while a text shows at once. Holding the text back that
            # long means a key pressed as soon as the item can be read is never silently lost.
            state.page_loaded = True
            time.sleep(FIRST_DRAW_PAUSE_S)
        with texts:  # one passage, exactly as stored: the prompt, then the model's part between the markers
            with st.container(border=True, key="completion_box"):
                st.caption(f"COMPLETION #{cid} · judge what the model wrote after the prompt ({display.LEGEND})")
                st.text(display.passage(item.prompt, item.completion))
        _note_widgets(cid)
        left = db.queue_size(ctx.engine, ctx.labeler_id, overlap=cfg.overlap)
    _flash()
    if cfg.session_goal:
        done = _session_count()
        reached = done >= cfg.session_goal
        st.progress(
            min(1.0, done / cfg.session_goal),
            text=f"{done} of {cfg.session_goal} this session" + (": goal reached, thank you!" if reached else ""),
        )
    counts = _counts()
    st.caption(
        f"You today: {counts['today']} · you in total: {counts['total']} · left in the queue: {left}",
        help="judgements including skips; the queue counts items you could still get",
    )
    message = runtime.maybe_refill(refiller, ctx.engine, cfg, left)
    if message:  # the operator's details (commands, errors) go to the log, not to the labeller
        log.info("queue refill: %s", message)
    if refiller.running():
        st.caption("More items are being written in the background.")
    elif item is None:  # the operator's command is in the server log, not on the labeller's page
        st.caption(
            "For whoever runs this app: the queue is empty and no refill is running; the server log says why, "
            "and the Data page has a refill button."
        )


st.subheader("Label completions")
with st.container(border=True):
    st.caption("INSTRUCTIONS")
    st.text(cfg.instructions)
st.caption(
    "Keys: **G** good · **B** bad · **S** skip · **U** undo (no need to click into the page first). "
    "One press per item; a held key counts once."
)
labelling()
heartbeat()
