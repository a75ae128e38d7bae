"""``python -m db upgrade | stats | export --format jsonl|csv|hf DEST | import-prompts FILE | clean-runs [--yes]``.

``stats`` also lists what runs left under ``$RLHF_ARTIFACTS`` (unfinished ``.work-*`` runs, hidden
``.*.tmp-*`` / ``.*.old-*`` saves) with their sizes; ``clean-runs --yes`` (``make clean-runs``)
removes those whose owner is dead."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import db
from common.errors import cli_entry, setup_logging
from db.engine import describe


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m db", description="The feedback database: migrate, count, export, import."
    )
    p.add_argument(
        "--url", default=None, help="database URL (default: $RLHF_DB_URL, else sqlite:///data/feedback.sqlite)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("upgrade", help="create the database or migrate it to the newest schema")
    sub.add_parser(
        "stats", help="print counts as JSON, and the unfinished runs and temporary folders under $RLHF_ARTIFACTS"
    )
    cr = sub.add_parser(
        "clean-runs",
        help="list unfinished runs and temporary folders under $RLHF_ARTIFACTS; remove those whose owner is dead",
    )
    cr.add_argument("--yes", action="store_true", help="remove them (without it: only list what would go)")
    ex = sub.add_parser("export", help="export every judgement joined with its prompt and completion")
    ex.add_argument(
        "--format",
        choices=["jsonl", "csv", "hf"],
        default="jsonl",
        help="jsonl/csv: a file; hf: a `datasets` folder (load_from_disk)",
    )
    ex.add_argument("dest", type=Path, help="output file (jsonl/csv) or folder (hf)")
    im = sub.add_parser("import-prompts", help="add custom prompts from a text file (one per line)")
    im.add_argument("file", type=Path, help="UTF-8 text file; blank lines skipped, duplicates dropped")
    return p


def leftovers_summary() -> dict:
    """The unfinished runs and temporary folders under ``RLHF_ARTIFACTS``, for ``stats``."""
    from common.paths import artifacts_root, find_leftovers

    root = artifacts_root()
    items = find_leftovers(root)
    return {
        "root": str(root),
        "count": len(items),
        "total_mb": round(sum(i.size for i in items) / (1 << 20), 1),
        "removable_mb": round(sum(i.size for i in items if i.collectable) / (1 << 20), 1),
        "items": [i.as_dict(root) for i in items],
    }


def clean_runs(*, yes: bool) -> int:
    """List the leftovers; with ``yes`` remove those whose owner is dead (never a live run's)."""
    from common.paths import artifacts_root, find_leftovers, remove_leftovers

    root = artifacts_root()
    items = find_leftovers(root)
    for item in items:
        d = item.as_dict(root)
        state = "remove" if item.collectable else "keep  "
        print(f"{state} {d['size_mb']:>9.1f} MB  {item.kind:<14}  {d['path']}  (owner: {item.owner})")
    removable = [i for i in items if i.collectable]
    mb = sum(i.size for i in removable) / (1 << 20)
    if not yes:
        print(f"{len(removable)} of {len(items)} removable ({mb:.1f} MB) under {root}; run with --yes to remove them")
        return 0
    removed = remove_leftovers(removable)
    print(f"removed {len(removed)} of {len(items)} ({mb:.1f} MB) under {root}")
    return 0


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.command == "upgrade":
        engine = db.connect(args.url, upgrade=True)
        print(f"{describe(engine)} is at schema revision {db.current_revision(engine)}")
    elif args.command == "stats":
        engine = db.connect(args.url)
        out = db.stats(engine)
        out["artifacts_leftovers"] = leftovers_summary()
        print(json.dumps(out, indent=2, sort_keys=True))
    elif args.command == "clean-runs":
        return clean_runs(yes=args.yes)
    elif args.command == "export":
        engine = db.connect(args.url)
        out = db.export_labels(engine, args.format, args.dest)
        print(out)
    elif args.command == "import-prompts":
        engine = db.connect(args.url)
        n = db.import_prompts(engine, args.file)
        print(f"added {n} new prompt(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
