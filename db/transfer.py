"""Export labels (JSONL, CSV, a `datasets` folder) and import custom prompts."""

from __future__ import annotations

import csv
import json
import logging
import os
import uuid
from pathlib import Path

from sqlalchemy import Engine

from common.errors import UserError
from common.paths import atomic_dir
from db.reads import JUDGEMENT_COLUMNS, judgement_rows
from db.types import shown_text
from db.writes import add_prompts_counted

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv", "hf")
EXPORT_COLUMNS = [*JUDGEMENT_COLUMNS, "text"]
DEFAULT_NAMES = {"jsonl": "labels.jsonl", "csv": "labels.csv", "hf": "labels_hf"}
# A spreadsheet reads a cell that starts with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value):
    """A CSV cell that no spreadsheet runs: text starting with ``= + - @``, tab or CR gets a leading
    single quote (OWASP's rule), so ``=HYPERLINK(...)`` opens as the text it is. Numbers and other
    text are unchanged. Only the CSV export does this; JSONL and the datasets folder keep the text exact."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def export_rows(engine: Engine) -> list[dict]:
    """One dict per judgement (skips included), timestamps as ISO strings, plus ``text`` (:func:`db.shown_text`)."""
    rows = judgement_rows(engine)
    for r in rows:
        r["created_at"] = r["created_at"].isoformat()
        r["updated_at"] = r["updated_at"].isoformat()
        r["text"] = shown_text(r["prompt"], r["completion"])
    return rows


def export_labels(engine: Engine, fmt: str, dest: Path) -> Path:
    """Write every judgement, joined with its prompt and completion, to ``dest``; returns the path written.

    ``jsonl``/``csv``: ``dest`` is a file (or an existing folder, which gets ``labels.jsonl``/``labels.csv``).
    ``hf``: ``dest`` is a folder written with ``datasets.Dataset.save_to_disk`` (load with ``load_from_disk``).
    CSV cells that a spreadsheet would run as a formula are neutralised (:func:`csv_safe`).
    Files and folders appear complete or not at all."""
    if fmt not in FORMATS:
        raise UserError(f"export format {fmt!r} is not one of {list(FORMATS)}.", "use jsonl, csv or hf.")
    dest = Path(dest)
    if fmt != "hf" and dest.is_dir():
        dest = dest / DEFAULT_NAMES[fmt]
    _check_destination(dest)
    rows = export_rows(engine)
    if fmt == "hf":
        _write_hf(rows, dest)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            try:
                fh = open(tmp, "w", encoding="utf-8", newline="")
            except OSError as err:
                raise UserError(
                    f"cannot write the export into {str(dest.parent)!r} ({err.strerror or err}).",
                    "pick a folder you can write to, or fix its permissions.",
                ) from None
            with fh:
                if fmt == "jsonl":
                    for r in rows:
                        fh.write(json.dumps(r, ensure_ascii=False) + "\n")
                else:
                    writer = csv.DictWriter(fh, fieldnames=EXPORT_COLUMNS, quoting=csv.QUOTE_NONNUMERIC)
                    writer.writeheader()
                    writer.writerows({k: csv_safe(v) for k, v in r.items()} for r in rows)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    log.info("exported %d judgements to %s (%s)", len(rows), dest, fmt)
    return dest


def _check_destination(dest: Path) -> None:
    """Exports write regular files only: a symlink, a FIFO or a device at ``dest`` (``/dev/stdout`` as
    root, say) would be replaced by a regular file, so it is refused before anything is written."""
    if dest.is_symlink():
        raise UserError(
            f"export destination {str(dest)!r} is a symbolic link; exporting would replace it with a file.",
            "give the path of a regular file (or of the link's target), or a folder.",
        )
    if dest.exists() and not (dest.is_file() or dest.is_dir()):
        raise UserError(
            f"export destination {str(dest)!r} is not a regular file (a FIFO, socket or device).",
            "give the path of a regular file or a folder.",
        )


def _write_hf(rows: list[dict], dest: Path) -> None:
    from datasets import Dataset, Features, Value

    features = Features(
        {
            "judgement_id": Value("int64"),
            "completion_id": Value("int64"),
            "prompt_id": Value("int64"),
            "labeler_id": Value("int64"),
            "labeler": Value("string"),
            "label": Value("string"),
            "seconds": Value("float64"),
            "flag": Value("string"),
            "comment": Value("string"),
            "created_at": Value("string"),
            "updated_at": Value("string"),
            "prompt": Value("string"),
            "completion": Value("string"),
            "model_version_id": Value("int64"),
            "reward_score": Value("float64"),
            "text": Value("string"),
        }
    )
    columns = {c: [r[c] for r in rows] for c in EXPORT_COLUMNS}
    ds = Dataset.from_dict(columns, features=features)
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{str(dest)!r} is a file; the hf export writes a folder.", "give a folder path.")
    with atomic_dir(dest) as tmp:
        ds.save_to_disk(str(tmp), num_shards=1)  # (0 rows would otherwise write 0 shards, unloadable)


def import_prompts(engine: Engine, path: Path) -> int:
    """Add the prompts in a text file (one per line; blank lines skipped, duplicates dropped);
    returns how many were new."""
    from common.imdb import read_prompt_file  # (imports numpy; only needed here)

    prompts = read_prompt_file(path)
    _, n_new = add_prompts_counted(engine, prompts, source="custom")
    log.info("%s: %d prompts, %d new", path, len(prompts), n_new)
    return n_new
