"""The data page (admins only): export the labels, import custom prompts, refill the queue.

The role is checked on the server at the top of every run of this page and again before each
action (``ui.admin_action``), so a labeller reaches none of it: not by the navigation (it is not
in theirs), not by the page's URL, not by replaying a widget action from an admin's old page."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import streamlit as st

import db
from common.errors import UserError
from common.imdb import read_prompt_file
from labeling_app import runtime, ui

ctx = ui.context()
cfg = ctx.cfg
ui.require_admin(ctx, "the Data page")

st.subheader("Data")

# ---------------------------------------------------------------------------- export
st.markdown("#### Export labels")
st.caption("The same files as `python -m db export --format jsonl|csv|hf DEST`.")
fmt = st.radio(
    "Format",
    ["jsonl", "csv", "hf"],
    horizontal=True,
    key="export_fmt",
    format_func={"jsonl": "JSONL", "csv": "CSV", "hf": "datasets folder (zip)"}.get,
)
if st.button("Prepare export", key="export") and ui.admin_action(ctx, "the export"):
    try:
        with tempfile.TemporaryDirectory() as tmp:
            name = {"jsonl": "labels.jsonl", "csv": "labels.csv", "hf": "labels_dataset"}[fmt]
            out = Path(db.export_labels(ctx.engine, fmt, Path(tmp) / name))
            if out.is_dir():
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                    for p in sorted(out.rglob("*")):
                        if p.is_file():
                            zf.write(p, Path(name) / p.relative_to(out))
                st.session_state.export_file = (f"{name}.zip", buf.getvalue(), "application/zip")
            else:
                mime = "application/jsonl" if fmt == "jsonl" else "text/csv"
                st.session_state.export_file = (out.name, out.read_bytes(), mime)
        db.audit(
            ctx.engine,
            "export",
            actor=ctx.labeler_name,
            actor_id=ctx.labeler_id,
            target=st.session_state.export_file[0],
            client=ui.client_address(),
            detail=fmt,
        )
    except UserError as err:
        st.session_state.pop("export_file", None)
        st.error(str(err))
if "export_file" in st.session_state:
    file_name, data, mime = st.session_state.export_file
    st.download_button(
        f"Download {file_name} ({len(data):,} bytes)",
        data,
        file_name=file_name,
        mime=mime,
        key="download",
        type="primary",
        on_click="ignore",
    )

# ---------------------------------------------------------------------------- import
st.markdown("#### Import custom prompts")
st.caption(
    "A UTF-8 text file, one prompt per line (blank lines skipped, duplicates dropped). "
    "A background refill then writes one completion per prompt (when a policy exists)."
)
upload = st.file_uploader("Prompt file", type=["txt"], key="prompt_file")
if upload is not None and st.button("Import prompts", key="import") and ui.admin_action(ctx, "the import"):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prompts.txt"
        path.write_bytes(upload.getvalue())
        try:
            n = db.import_prompts(ctx.engine, path)
            prompts = read_prompt_file(path)
        except UserError as err:
            st.error(str(err))
        else:
            db.audit(
                ctx.engine,
                "import",
                actor=ctx.labeler_name,
                actor_id=ctx.labeler_id,
                target=upload.name,
                client=ui.client_address(),
                detail=f"{n} new prompt(s)",
            )
            st.success(f"Imported {n} new prompt(s) ({len(prompts)} in the file).")
            message = runtime.maybe_refill(ui.get_refiller(ctx.url), ctx.engine, cfg, 0, force=True, prompts=prompts)
            if message:
                st.caption(message)

# ---------------------------------------------------------------------------- queue
st.markdown("#### Queue")
left = db.queue_size(ctx.engine, ctx.labeler_id, overlap=cfg.overlap)
refiller = ui.get_refiller(ctx.url)
st.text(
    f"Items you can still label: {left}\n"
    f"Refill policy: {cfg.policy} · batch {cfg.refill_batch} · automatic below {cfg.prefetch} "
    f"({'on' if cfg.auto_refill else 'off'})"
)
if st.button("Refill the queue now", key="refill", disabled=refiller.running()) and ui.admin_action(
    ctx, "the queue refill"
):
    runtime.maybe_refill(refiller, ctx.engine, cfg, left, force=True)
if refiller.status.message:
    (st.warning if refiller.status.last_error else st.caption)(refiller.status.message)
