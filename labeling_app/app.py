"""The labelling app: ``streamlit run labeling_app/app.py`` (or ``python -m labeling_app``).

Pages only render and collect input; every read and write goes through ``db``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:  # `streamlit run` puts only this folder on the path
    sys.path.insert(0, str(_REPO))

import streamlit as st  # noqa: E402

from labeling_app import ui  # noqa: E402

_HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="RLHF labelling", page_icon=":material/label:", layout="centered")

ctx = ui.bootstrap()
st.session_state["_ctx"] = ctx

if not ui.try_resume_sign_in(ctx):
    # Nothing but the sign-in form until someone signed in (name and password, or the token, if needed).
    ui.browser_session_script()  # after a sign-out or a refused cookie: the browser drops its cookie
    st.navigation([st.Page(_HERE / "views" / "sign_in.py", title="Sign in")], position="hidden").run()
    st.stop()

st.session_state["_ctx"] = ui.bootstrap()
with st.sidebar:
    st.caption("Signed in as")
    st.text(st.session_state.labeler_name)
    st.caption(ui.role_caption(st.session_state["_ctx"]))
    if st.button("Sign out", key="sign_out"):
        ui.sign_out(st.session_state["_ctx"])
        st.rerun()
    ui.browser_session_script()  # after a sign-in: the browser claims its session cookie

label_page = st.Page(
    _HERE / "views" / "label.py", title="Label", icon=":material/label:", url_path="label", default=True
)
pages = [
    label_page,
    st.Page(_HERE / "views" / "compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    st.Page(_HERE / "views" / "stats.py", title="Stats", icon=":material/bar_chart:", url_path="stats"),
    st.Page(_HERE / "views" / "guidelines.py", title="Guidelines", icon=":material/menu_book:", url_path="guidelines"),
    st.Page(_HERE / "views" / "analysis.py", title="Analysis", icon=":material/biotech:", url_path="analysis"),
]
if ui.is_admin(st.session_state["_ctx"]):  # a labeller's navigation has no Data page; the page checks again
    pages.append(st.Page(_HERE / "views" / "data.py", title="Data", icon=":material/database:", url_path="data"))
page = st.navigation(pages)
if page.title != label_page.title:  # the labeller moved on: the item this tab held is free for others now
    ui.release_item(st.session_state["_ctx"])
if page.title != "Compare":  # the same for the comparison this tab held
    ui.release_pair(st.session_state["_ctx"])
page.run()
