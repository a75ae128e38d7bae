"""User-facing errors: one line that names the problem and the fix, and a non-zero exit.

:func:`cli_entry` wraps every command's ``main``. It is the one place where an error becomes what
the user sees: a :class:`UserError` as is, and an environmental failure that escapes a stage (an
``OSError`` such as a full disk or a read-only folder, a database that refuses a write, torch or
safetensors failing to write a file) through :func:`explain`, as the same one line naming the path
and the fix, exit 2. No stage needs a ``try`` of its own for these.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class UserError(Exception):
    """A problem the user can fix. ``str(err)`` is one line: what is wrong, then what to do."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem} Fix: {fix}")


class ConfigError(UserError):
    """A profile or override that does not fit the stage's config dataclass."""


class AssetMissing(UserError):
    """An offline asset whose pip package is not installed."""


class EnvironmentProblem(UserError):
    """The machine, not the input: a folder that cannot be written, a full disk, a read-only database."""


#: Functions that turn an exception of their library into a :class:`UserError` (or return None).
#: ``db.engine`` registers the one for SQLAlchemy's errors (``common`` imports no package of ours).
EXPLAINERS: list[Callable[[BaseException], UserError | None]] = []

_SPACE = (errno.ENOSPC, errno.EDQUOT)
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
_FREE_SPACE_FIX = (
    "free some space (`python -m db clean-runs --yes` removes unfinished runs and temporary folders), "
    "or point RLHF_ARTIFACTS at a bigger disk."
)


def _artifacts() -> str:
    return os.environ.get("RLHF_ARTIFACTS") or "artifacts"


def explain_os_error(err: OSError) -> EnvironmentProblem:
    """One line for an ``OSError``: what failed, on which path, and what to do."""
    path = err.filename if err.filename is not None else None
    where = repr(str(path)) if path is not None else f"a file under {_artifacts()!r}"
    if err.filename2 is not None:
        where += f" (to {str(err.filename2)!r})"
    reason = err.strerror or type(err).__name__
    if err.errno in _SPACE:
        return EnvironmentProblem(f"no space left to write {where} ({reason}).", _FREE_SPACE_FIX)
    if err.errno in _READ_ONLY:
        return EnvironmentProblem(
            f"cannot write {where} ({reason}).",
            "make it writable (check its permissions, owner and mount), or point RLHF_ARTIFACTS / RLHF_DB_URL "
            "at a writable place.",
        )
    if err.errno == errno.ENOENT:
        return EnvironmentProblem(
            f"{where} does not exist ({reason}).", "check the path, or run the stage that creates it first."
        )
    if err.errno in (errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOTEMPTY):
        return EnvironmentProblem(f"cannot use {where} ({reason}).", "move what is in the way, or pick another path.")
    return EnvironmentProblem(
        f"the system refused to use {where} ({reason}).", "check that path (disk, permissions, mount) and try again."
    )


def _write_failure(err: BaseException) -> EnvironmentProblem | None:
    """torch.save (``inline_container``) and safetensors report a failed write as their own errors."""
    text = str(err)
    low = text.lower()
    name = type(err).__name__
    if name == "SafetensorError" or "inline_container" in low or "pytorchstreamwriter" in low:
        first = (text.strip().splitlines() or [""])[0][:200]
        if "no space" in low or "storagefull" in low or "code: 28" in low or "file write failed" in low:
            return EnvironmentProblem(
                f"no space left to write a model under {_artifacts()!r} ({first}).", _FREE_SPACE_FIX
            )
        if "read-only" in low or "permission" in low or "code: 30" in low or "code: 13" in low:
            return EnvironmentProblem(
                f"cannot write a model under {_artifacts()!r} ({first}).",
                "make the folder writable, or point RLHF_ARTIFACTS at a writable place.",
            )
    return None


def explain(err: BaseException) -> UserError | None:
    """The one-line :class:`UserError` for ``err``, or None when it is a bug (a real traceback)."""
    if isinstance(err, UserError):
        return err
    for explainer in EXPLAINERS:
        found = explainer(err)
        if found is not None:
            return found
    if isinstance(err, OSError):
        return explain_os_error(err)
    return _write_failure(err)


def cli_entry(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a CLI ``main`` so a :class:`UserError`, or an environmental error :func:`explain` knows,
    prints one line on stderr and exits 2, and Ctrl-C exits 130 without a traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        except Exception as err:
            user = explain(err)
            if user is None:
                raise
            if not isinstance(err, UserError):
                log.debug("the error behind the message", exc_info=err)  # the traceback, with --verbose
            print(f"error: {user}", file=sys.stderr)
            raise SystemExit(user.exit_code) from None

    return wrapper


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from common import runtime

    if runtime.chosen():
        logging.getLogger("common.runtime").info(
            "idle OpenMP threads: %s; malloc: %s", runtime.wait_policy(), runtime.malloc_setting()
        )
