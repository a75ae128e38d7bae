"""``python -m db upgrade | stats | export --format jsonl|csv|hf DEST | import-prompts FILE``."""

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
    sub.add_parser("stats", help="print counts as JSON")
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


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.command == "upgrade":
        engine = db.connect(args.url, upgrade=True)
        print(f"{describe(engine)} is at schema revision {db.current_revision(engine)}")
    elif args.command == "stats":
        engine = db.connect(args.url)
        print(json.dumps(db.stats(engine), indent=2, sort_keys=True))
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
