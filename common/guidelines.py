"""The labelling guidelines: one Markdown file that says what "good" means (``configs/guidelines.md``).

A team edits that one file; the app's Guidelines page shows it, ``python -m common.guidelines``
prints it, and the simulated labellers' gold judge (:mod:`common.gold`) scores its three parts
(positive, about the film, fluent English).

Which file: ``label.guidelines`` of the profile when the ``label`` section has that key, else
``$RLHF_GUIDELINES``, else ``configs/guidelines.md`` of the repository. A relative path is taken
from the repository root. A missing or empty file is a :class:`~common.errors.UserError` with the
path and the fix (one line on the command line, a message on the app's page), never a crash.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from common.errors import UserError, cli_entry

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FILE = REPO / "configs" / "guidelines.md"
ENV = "RLHF_GUIDELINES"


def guidelines_path(configured: str | Path | None = None) -> Path:
    """The guidelines file: ``configured`` (e.g. ``label.guidelines``), else ``$RLHF_GUIDELINES``, else
    the default; relative paths are taken from the repository root."""
    raw = str(configured).strip() if configured else os.environ.get(ENV, "").strip()
    path = Path(raw).expanduser() if raw else DEFAULT_FILE
    return path if path.is_absolute() else REPO / path


def load_guidelines(configured: str | Path | None = None) -> str:
    """The guidelines' Markdown text; ``UserError`` when the file is missing, unreadable or empty."""
    path = guidelines_path(configured)
    fix = f"write the labelling guidelines into {path} (see configs/guidelines.md in the repository), or point label.guidelines / ${ENV} at such a file."
    if not path.is_file():
        raise UserError(f"the labelling guidelines file {path} does not exist.", fix)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"the labelling guidelines file {path} cannot be read ({type(err).__name__}).", fix) from None
    if not text.strip():
        raise UserError(f"the labelling guidelines file {path} is empty.", fix)
    return text


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m common.guidelines", description="Print the labelling guidelines.")
    p.add_argument("--file", default=None, help=f"guidelines file (default: ${ENV} or configs/guidelines.md)")
    args = p.parse_args(argv)
    print(load_guidelines(args.file), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
