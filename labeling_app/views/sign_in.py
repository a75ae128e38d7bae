"""Sign-in: name and password in accounts mode (and/or the identity provider's button, with
``label.identity_provider``); the name (and the shared token when ``RLHF_LABEL_TOKEN`` is set) otherwise."""

from __future__ import annotations

import streamlit as st

from labeling_app import runtime, ui

ctx = ui.context()
accounts = ctx.mode == "accounts"
needs_token = ctx.mode == "shared-token"
provider = ctx.cfg.identity_provider if accounts else ""  # st.login only signs accounts in
show_form = not provider or ctx.cfg.password_sign_in

st.title("Sign in to label")
if accounts:
    st.caption(
        "Your account's name and password. Accounts are made by whoever runs this app "
        "(`python -m db users add`); the page never creates one."
    )
else:
    st.caption(
        "Your name is stored with every judgement you make. "
        "1-64 characters of one alphabet; the same name (in any case) continues where you left off."
    )
problem = st.session_state.pop("sign_in_problem", None)  # e.g. a refused name from the URL (?u=)
if problem:
    st.error(problem)
if provider:
    setup = ui.identity_provider_problem(ctx)
    refused = st.session_state.get("identity_refused")  # the identity st.user names matches no enabled account
    if setup:
        st.error(setup)
    elif refused:
        st.error(refused)
        if st.button(f"Sign out of {runtime.provider_label(provider)}", key="identity_sign_out"):
            ui.identity_sign_out()
            st.rerun()
    else:
        if st.button(f"Sign in with {runtime.provider_label(provider)}", key="identity_sign_in", type="primary"):
            st.login(provider)
        st.caption(f"Your {ctx.cfg.identity_claim} there must be the name of your account here.")
submitted = False
if show_form:
    with st.form("sign_in", enter_to_submit=True):
        # No max_chars: a box that silently cuts a long (or pasted) name would hide the refusal below.
        name = st.text_input("Your name", value=st.query_params.get(runtime.LABELER_PARAM, ""), key="sign_in_name")
        if accounts:
            secret = st.text_input("Password", type="password", key="sign_in_password")
        else:
            secret = st.text_input("Access token", type="password", key="sign_in_token") if needs_token else None
        submitted = st.form_submit_button("Start labelling", type="primary")
st.caption(f"This app runs in {runtime.MODE_NAMES[ctx.mode]}.")

if submitted:
    problem = ui.sign_in(ctx, name, secret)
    if problem:
        st.error(problem)
    else:
        st.rerun()
