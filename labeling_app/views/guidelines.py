"""The guidelines page: what "good" means, with examples of each kind, from one editable file.

The text is ``configs/guidelines.md`` (or ``label.guidelines`` / ``$RLHF_GUIDELINES``), shown as
Markdown; a missing or empty file gives a message naming the file and the fix, not a traceback.
Admins can edit the file here (saved atomically, in the audit trail); labellers only read it.
"""

from __future__ import annotations

import streamlit as st

import db
from common.errors import UserError
from common.guidelines import guidelines_path, load_guidelines
from labeling_app import runtime, ui

ctx = ui.context()
configured = getattr(ctx.cfg, "guidelines", None)

try:
    text = load_guidelines(configured)
except UserError as err:
    st.subheader("Labelling guidelines")
    st.warning(f"No guidelines to show: {err}", icon="⚠️")
    st.caption(f"Short form, shown above every item: {ctx.cfg.instructions}")
    st.stop()

st.markdown(text)
path = guidelines_path(configured)
st.caption(f"From `{path}`: edit that file to change these guidelines.")

if ui.is_admin(ctx):  # the editor is for admins; saving checks the role again, on the server
    with st.expander("Edit the guidelines (admins only)"):
        new = st.text_area("Guidelines (Markdown)", value=text, height=400, key="guidelines_text")
        if st.button("Save the guidelines", key="guidelines_save") and ui.admin_action(ctx, "the guidelines editor"):
            try:
                runtime.save_guidelines(path, new)
            except UserError as err:
                st.error(str(err))
            else:
                db.audit(
                    ctx.engine,
                    "guidelines_edit",
                    actor=ctx.labeler_name,
                    actor_id=ctx.labeler_id,
                    target=path.name,
                    client=ui.client_address(),
                    detail=f"{len(new)} characters",
                )
                st.success("Saved. Everyone sees the new guidelines at their next visit to this page.")
