"""Execute the walkthrough notebook top to bottom (``make notebook``) without touching the saved copy.

    python notebooks/run_notebook.py                       # -> $RLHF_ARTIFACTS/notebook/rlhf_walkthrough.ipynb
    RLHF_CONFIG=configs/default.yaml python notebooks/run_notebook.py --out /tmp/walkthrough.ipynb

The executed copy (with outputs and plots) is written elsewhere, so the tracked notebook stays
output-free. The kernel is the interpreter running this script (the project venv).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "rlhf_walkthrough.ipynb"


def execute(path: Path = NOTEBOOK, out: Path | None = None, timeout: int = 3600):
    """Run the notebook in a fresh kernel from the repository root; return the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    # jupyter_client starts the "python3" kernel with sys.executable; make PATH agree for its children
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out)
    return nb


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))
    from common.errors import cli_entry
    from common.paths import artifacts_root

    @cli_entry
    def run() -> int:
        p = argparse.ArgumentParser(description="Execute notebooks/rlhf_walkthrough.ipynb into a copy with outputs.")
        p.add_argument(
            "--out",
            type=Path,
            default=None,
            help="where to write the executed copy (default: $RLHF_ARTIFACTS/notebook/rlhf_walkthrough.ipynb)",
        )
        p.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
        args = p.parse_args(argv)
        out = args.out or (artifacts_root() / "notebook" / NOTEBOOK.name)
        print(f"running {NOTEBOOK.name} on {os.environ.get('RLHF_CONFIG', 'configs/default.yaml')} ...", flush=True)
        execute(NOTEBOOK, out.resolve(), args.timeout)
        print(f"executed copy: {out}")
        return 0

    return run()


if __name__ == "__main__":
    sys.exit(main())
