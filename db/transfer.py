"""Export labels and pair judgements (JSONL, CSV, a `datasets` folder), read preference files back,
and import custom prompts."""

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
from db.pairs import pair_judgement_rows
from db.reads import JUDGEMENT_COLUMNS, judgement_rows
from db.types import PreferencePair, shown_text
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
    dest = _destination(fmt, dest, DEFAULT_NAMES)
    rows = export_rows(engine)
    if fmt == "hf":
        _write_hf(rows, dest)
    else:
        _write_file(rows, fmt, dest, EXPORT_COLUMNS)
    log.info("exported %d judgements to %s (%s)", len(rows), dest, fmt)
    return dest


def _destination(fmt: str, dest: Path, names: dict[str, str]) -> Path:
    if fmt not in FORMATS:
        raise UserError(f"export format {fmt!r} is not one of {list(FORMATS)}.", "use jsonl, csv or hf.")
    dest = Path(dest)
    if fmt != "hf" and dest.is_dir():
        dest = dest / names[fmt]
    _check_destination(dest)
    return dest


def _write_file(rows: list[dict], fmt: str, dest: Path, columns: list[str]) -> None:
    """Write ``rows`` as JSONL or CSV to ``dest`` atomically (a temporary file, fsync, rename)."""
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
                writer = csv.DictWriter(fh, fieldnames=columns, quoting=csv.QUOTE_NONNUMERIC)
                writer.writeheader()
                writer.writerows({k: csv_safe(v) for k, v in r.items()} for r in rows)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


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


# --------------------------------------------------------------------------------------------
# pair judgements, in TRL's preference format

PAIR_EXPORT_COLUMNS = [
    "prompt",
    "chosen",
    "rejected",
    "comparison_id",
    "judgement_id",
    "labeler",
    "choice",
    "left_side",
    "chosen_id",
    "rejected_id",
    "chosen_model_version_id",
    "rejected_model_version_id",
    "source",
    "seconds",
    "created_at",
    "updated_at",
]
PAIR_DEFAULT_NAMES = {"jsonl": "pairs.jsonl", "csv": "pairs.csv", "hf": "pairs_hf"}
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


def pair_export_rows(engine: Engine) -> list[dict]:
    """One dict per pair judgement that chose ``a`` or ``b`` (ties and skips are no preference), in
    TRL's explicit-prompt preference format (``prompt``, ``chosen``, ``rejected``) plus where it came
    from: the labeller, the choice, the side shown on the left, the completions' ids and versions."""
    out = []
    for r in pair_judgement_rows(engine):
        if r["choice"] not in ("a", "b"):
            continue
        win, lose = ("a", "b") if r["choice"] == "a" else ("b", "a")
        out.append(
            {
                "prompt": r["prompt"],
                "chosen": r[win],
                "rejected": r[lose],
                "comparison_id": r["comparison_id"],
                "judgement_id": r["judgement_id"],
                "labeler": r["labeler"],
                "choice": r["choice"],
                "left_side": r["left_side"],
                "chosen_id": r[f"{win}_id"],
                "rejected_id": r[f"{lose}_id"],
                "chosen_model_version_id": r[f"{win}_model_version_id"],
                "rejected_model_version_id": r[f"{lose}_model_version_id"],
                "source": r["source"],
                "seconds": r["seconds"],
                "created_at": r["created_at"].isoformat(),
                "updated_at": r["updated_at"].isoformat(),
            }
        )
    return out


def export_pairs(engine: Engine, fmt: str, dest: Path) -> Path:
    """Write every decisive pair judgement (:func:`pair_export_rows`) to ``dest``; returns the path.

    Formats and destinations as :func:`export_labels` (files ``pairs.jsonl``/``pairs.csv`` in a
    folder; ``hf`` a ``datasets`` folder that TRL's ``DPOTrainer``/``RewardTrainer`` read as is).
    Refused, with nothing written, when there is no comparison with an ``a``/``b`` choice."""
    dest = _destination(fmt, dest, PAIR_DEFAULT_NAMES)
    rows = pair_export_rows(engine)
    if not rows:
        raise UserError(
            "a pairs export with no comparisons: no pair judgement prefers one completion to the other.",
            "make comparisons (python -m db pairs make) and label some on the Compare page first.",
        )
    if fmt == "hf":
        _write_pairs_hf(rows, dest)
    else:
        _write_file(rows, fmt, dest, PAIR_EXPORT_COLUMNS)
    log.info("exported %d preference pairs to %s (%s)", len(rows), dest, fmt)
    return dest


def _write_pairs_hf(rows: list[dict], dest: Path) -> None:
    from datasets import Dataset, Features, Value

    kinds = {"comparison_id", "judgement_id", "chosen_id", "rejected_id"}
    kinds |= {"chosen_model_version_id", "rejected_model_version_id"}
    features = Features(
        {
            c: Value("int64") if c in kinds else Value("float64") if c == "seconds" else Value("string")
            for c in PAIR_EXPORT_COLUMNS
        }
    )
    ds = Dataset.from_dict({c: [r[c] for r in rows] for c in PAIR_EXPORT_COLUMNS}, features=features)
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{str(dest)!r} is a file; the hf export writes a folder.", "give a folder path.")
    with atomic_dir(dest) as tmp:
        ds.save_to_disk(str(tmp), num_shards=1)


def read_preference_file(path: Path) -> list[PreferencePair]:
    """Preference pairs read back from TRL's preference format: a JSONL file (one object per line) or
    a ``datasets.save_to_disk`` folder, each record with text fields ``prompt``, ``chosen`` and
    ``rejected`` (``comparison_id`` and ``labeler`` are kept when present, as in our export).

    A missing path, a CSV file, a line that is not JSON, a missing or non-text field, or an empty
    file gives a one-line :class:`UserError`."""
    path = Path(path)
    fix = "give a .jsonl file or a datasets folder with prompt, chosen and rejected (python -m db export --pairs)."
    if path.is_dir():
        records = _read_hf_records(path, fix)
    elif path.is_file():
        if path.suffix.lower() == ".csv":
            raise UserError(f"{str(path)!r} is CSV; preference files are read from JSONL or a datasets folder.", fix)
        records = _read_jsonl_records(path, fix)
    else:
        raise UserError(f"preference file {str(path)!r} does not exist.", fix)
    out = []
    for i, rec in enumerate(records, 1):
        if not isinstance(rec, dict):
            raise UserError(f"{str(path)!r} record {i} is not an object.", fix)
        missing = [c for c in PREFERENCE_COLUMNS if not isinstance(rec.get(c), str)]
        if missing:
            raise UserError(f"{str(path)!r} record {i} has no text field(s) {missing}.", fix)
        cid = rec.get("comparison_id")
        labeler = rec.get("labeler")
        out.append(
            PreferencePair(
                rec["prompt"],
                rec["chosen"],
                rec["rejected"],
                int(cid) if isinstance(cid, int) and not isinstance(cid, bool) else None,
                labeler if isinstance(labeler, str) else None,
            )
        )
    if not out:
        raise UserError(f"preference file {str(path)!r} holds no pairs.", fix)
    return out


def _read_jsonl_records(path: Path, fix: str) -> list:
    records = []
    try:
        with open(path, encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise UserError(f"{str(path)!r} line {i} is not JSON ({err.msg}).", fix) from None
    except UnicodeDecodeError:
        raise UserError(f"{str(path)!r} is not UTF-8 text.", fix) from None
    except OSError as err:
        raise UserError(f"cannot read {str(path)!r} ({err.strerror or err}).", fix) from None
    return records


def _read_hf_records(path: Path, fix: str) -> list:
    from datasets import load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as err:  # FileNotFoundError, or the folder is no saved dataset
        raise UserError(f"{str(path)!r} is not a saved datasets folder ({type(err).__name__}).", fix) from None
    if not hasattr(ds, "column_names") or isinstance(ds.column_names, dict):
        raise UserError(f"{str(path)!r} holds a DatasetDict; give the folder of one split.", fix)
    missing = [c for c in PREFERENCE_COLUMNS if c not in ds.column_names]
    if missing:
        raise UserError(f"{str(path)!r} has no column(s) {missing}.", fix)
    return ds.to_list()


def import_prompts(engine: Engine, path: Path) -> int:
    """Add the prompts in a text file (one per line; blank lines skipped, duplicates dropped);
    returns how many were new."""
    from common.imdb import read_prompt_file  # (imports numpy; only needed here)

    prompts = read_prompt_file(path)
    _, n_new = add_prompts_counted(engine, prompts, source="custom")
    log.info("%s: %d prompts, %d new", path, len(prompts), n_new)
    return n_new
