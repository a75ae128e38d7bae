"""The guidelines page: what "good" means, with examples of each kind, from one editable file.

The text is ``configs/guidelines.md`` (or ``label.guidelines`` / ``$RLHF_GUIDELINES``), shown as
Markdown; a missing or empty file gives a message naming the file and the fix, not a traceback.
"""

from __future__ import annotations

import streamlit as st

from common.errors import UserError
from common.guidelines import guidelines_path, load_guidelines
from labeling_app import ui

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
st.caption(f"From `{guidelines_path(configured)}`: edit that file to change these guidelines.")
