"""Atomic folder writes, the latest pointer, and the environment variables."""

from __future__ import annotations

import errno
import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from common import paths
from common.errors import UserError


def test_env_defaults_and_overrides(monkeypatch, tmp_path):
    monkeypatch.delenv("RLHF_DB_URL", raising=False)
    monkeypatch.delenv("RLHF_ARTIFACTS", raising=False)
    assert paths.db_url() == "sqlite:///data/feedback.sqlite"
    assert str(paths.artifacts_root()) == "artifacts"
    monkeypatch.setenv("RLHF_ARTIFACTS", str(tmp_path))
    assert paths.reward_models_dir() == tmp_path / "reward_models"
    monkeypatch.setenv("RLHF_DB_URL", "feedback.sqlite")
    with pytest.raises(UserError, match="RLHF_DB_URL"):
        paths.db_url()


def test_atomic_dir_replaces_only_on_success(tmp_path):
    final = tmp_path / "model"
    with paths.atomic_dir(final) as tmp:
        (tmp / "weights").write_text("v1")
    assert (final / "weights").read_text() == "v1"

    with pytest.raises(RuntimeError):
        with paths.atomic_dir(final) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed mid-save")
    assert (final / "weights").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]

    with paths.atomic_dir(final) as tmp:
        (tmp / "weights").write_text("v2")
    assert (final / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def dead_pid() -> int:
    """The pid of a process that has just exited (not reused this soon)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_recover_after_crash_between_renames(tmp_path):
    final = tmp_path / "model"
    old = tmp_path / ".model.old-deadbeef"  # set aside by an older version (no owner): restored
    old.mkdir()
    (old / "weights").write_text("v1")
    host = paths.host_tag()
    stale = tmp_path / f".model.tmp-{host}-{dead_pid()}-0badc0de"  # its writer is dead: removed
    stale.mkdir()
    live = tmp_path / f".model.tmp-{host}-{os.getpid()}-0000beef"  # a writer still running: kept
    live.mkdir()
    elsewhere = tmp_path / f".model.tmp-otherhost-{dead_pid()}-0000cafe"  # another machine's: kept
    elsewhere.mkdir()
    no_owner = tmp_path / ".model.tmp-0000"  # names no writer: kept
    no_owner.mkdir()
    paths.recover_dir(final)
    assert (final / "weights").read_text() == "v1"
    assert not old.exists() and not stale.exists()
    assert live.exists() and elsewhere.exists() and no_owner.exists()


def test_temporary_names_carry_host_and_pid(tmp_path):
    name = paths.owned_name("run-a")
    assert name.startswith(f".run-a.tmp-{paths.host_tag()}-{os.getpid()}-")
    assert paths.parse_owner(name) == (paths.host_tag(), os.getpid())
    assert paths.parse_owner(".run-a.tmp-1234-0badc0de") == (paths.host_tag(), 1234)  # older names: this host
    assert paths.parse_owner(".m.json.tmp-12345678") is None
    assert paths.owner_alive("otherhost", 1) and paths.owner_alive(paths.host_tag(), os.getpid())
    assert not paths.owner_alive(paths.host_tag(), dead_pid())
    seen = []
    with paths.atomic_dir(tmp_path / "m") as tmp:
        seen.append(tmp.name)
    assert paths.parse_owner(seen[0]) == (paths.host_tag(), os.getpid())


# ------------------------------------------------------------------ two saves of one folder at once

PAYLOAD = 256 * 1024


def _save(final: str, who: str, barrier) -> None:
    """One writer: fill the temporary folder, wait until the other writer is mid-save too, swap."""
    with paths.atomic_dir(Path(final)) as tmp:
        (tmp / "weights.bin").write_bytes(who.encode() * (PAYLOAD // len(who)))
        (tmp / "config.json").write_text(f'{{"writer": "{who}"}}')
        barrier.wait(timeout=60)  # both are inside atomic_dir now, with their folders written
        (tmp / "done").write_text(who)


def _check_one_of(final: Path, writers: list[str]) -> None:
    who = (final / "done").read_text()
    assert who in writers
    assert (final / "config.json").read_text() == f'{{"writer": "{who}"}}'
    assert (final / "weights.bin").read_bytes() == who.encode() * (PAYLOAD // len(who))
    assert sorted(p.name for p in final.iterdir()) == ["config.json", "done", "weights.bin"]
    assert [p.name for p in final.parent.iterdir()] == [final.name]  # no temporary or set-aside folder left


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "replacing-a-folder"])
def test_two_concurrent_saves_of_one_folder_both_succeed_threads(tmp_path, existing):
    final = tmp_path / "out" / "model"
    for trial in range(5):
        if existing and not final.exists():
            _save(str(final), "first", threading.Barrier(1))
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []
        writers = [f"thread-a-{trial}", f"thread-b-{trial}"]

        def run(who: str, barrier=barrier, errors=errors) -> None:
            try:
                _save(str(final), who, barrier)
            except BaseException as err:  # reported below
                errors.append(err)

        threads = [threading.Thread(target=run, args=(w,)) for w in writers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        _check_one_of(final, writers)


def test_two_concurrent_saves_of_one_folder_both_succeed_processes(tmp_path):
    """Two processes (each its own pid in its temporary name) save one folder at the same moment:
    neither removes the other's temporary folder, both return without error, the later swap wins."""
    ctx = multiprocessing.get_context("spawn")
    final = tmp_path / "model"
    for trial in range(3):
        barrier = ctx.Barrier(2)
        writers = [f"proc-a-{trial}", f"proc-b-{trial}"]
        procs = [ctx.Process(target=_save, args=(str(final), w, barrier)) for w in writers]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        assert [p.exitcode for p in procs] == [0, 0]
        _check_one_of(final, writers)


def test_a_live_writers_temporary_folder_survives_another_save(tmp_path):
    """The race of issue 21: a second save of the same folder used to delete every ``.<name>.tmp-*``,
    including one a live process was still writing."""
    final = tmp_path / "seed-cache"
    started, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow() -> None:
        try:
            with paths.atomic_dir(final) as tmp:
                (tmp / "weights.bin").write_bytes(b"slow")
                started.set()
                release.wait(timeout=60)
                assert (tmp / "weights.bin").read_bytes() == b"slow"  # still there
        except BaseException as err:
            errors.append(err)

    t = threading.Thread(target=slow)
    t.start()
    assert started.wait(timeout=60)
    with paths.atomic_dir(final) as tmp:
        (tmp / "weights.bin").write_bytes(b"fast")
    release.set()
    t.join(timeout=60)
    assert not errors, errors
    assert (final / "weights.bin").read_bytes() == b"slow"  # the later swap wins


def test_latest_pointer(tmp_path):
    assert paths.resolve_latest(tmp_path) is None
    (tmp_path / "run-a").mkdir()
    paths.write_latest(tmp_path, "run-a")
    assert paths.resolve_latest(tmp_path) == tmp_path / "run-a"
    paths.write_latest(tmp_path, "run-missing")
    assert paths.resolve_latest(tmp_path) is None
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".latest.tmp")]


def test_write_json_and_run_ids(tmp_path):
    paths.write_json(tmp_path / "m.json", {"a": 1})
    assert (tmp_path / "m.json").read_text().strip().startswith("{")
    assert paths.new_run_id() != paths.new_run_id()


# ------------------------------------------------------------------ checks before a stage


def test_free_space_threshold_comes_from_the_environment(tmp_path, monkeypatch):
    paths.check_writable_dirs([tmp_path / "new" / "folder"], need_mb=1, stage="test")
    assert not (tmp_path / "new").exists()  # checked, not created
    monkeypatch.setenv("RLHF_MIN_FREE_MB", str(10**12))
    with pytest.raises(UserError, match="MB are free") as info:
        paths.check_writable_dirs([tmp_path], need_mb=1, stage="test")
    assert "RLHF_MIN_FREE_MB" in str(info.value) and "clean-runs" in str(info.value)
    monkeypatch.setenv("RLHF_MIN_FREE_MB", "0")
    paths.check_writable_dirs([tmp_path], need_mb=10**12, stage="test")  # 0 turns the check off
    monkeypatch.setenv("RLHF_MIN_FREE_MB", "lots")
    with pytest.raises(UserError, match="not a number of megabytes"):
        paths.check_writable_dirs([tmp_path], need_mb=1, stage="test")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the probe file is gone


def test_a_file_where_a_folder_is_needed(tmp_path):
    (tmp_path / "artifacts").write_text("not a folder")
    with pytest.raises(UserError, match="is a file"):
        paths.check_writable_dirs([tmp_path / "artifacts" / "policies"], need_mb=0, stage="test")


def test_output_folder_kinds(tmp_path, tiny_policy_dir, tiny_reward_dir):
    assert paths.model_kind(tiny_policy_dir) == "policy"
    assert paths.model_kind(tiny_reward_dir) == "reward"
    assert paths.model_kind(tmp_path / "missing") is None
    assert paths.check_output_folder(tmp_path / "new", kind="policy") == tmp_path / "new"
    with pytest.raises(UserError, match="holds a reward model"):
        paths.check_output_folder(tiny_reward_dir, kind="policy", overwrite=True)
    with pytest.raises(UserError, match="--overwrite"):
        paths.check_output_folder(tiny_policy_dir, kind="policy")
    assert paths.check_output_folder(tiny_policy_dir, kind="policy", overwrite=True) == tiny_policy_dir
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(UserError, match="holds other files"):
        paths.check_output_folder(tmp_path / "notes", kind="policy", overwrite=True)


# ------------------------------------------------------------------ errors that escape a stage


@pytest.mark.parametrize(
    "err,words",
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/x/model.safetensors"),
            ("no space left", "/x/model", "clean-runs"),
        ),
        (OSError(errno.EROFS, "Read-only file system", "/ro/latest"), ("cannot write", "/ro/latest", "writable")),
        (PermissionError(errno.EACCES, "Permission denied", "/p/f"), ("cannot write", "/p/f")),
        (OSError(errno.ENOSPC, "No space left on device"), ("no space left", "a file under")),
        (
            RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0; file write failed"),
            ("no space left", "model"),
        ),
    ],
    ids=["enospc", "erofs", "eacces", "enospc-without-path", "torch-save-failed"],
)
def test_environment_errors_become_one_line(err, words, capsys, monkeypatch):
    from common.errors import cli_entry

    monkeypatch.setenv("RLHF_ARTIFACTS", "/x")

    @cli_entry
    def main():
        raise err

    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: ") and "\n" not in line and " Fix: " in line, line
    for w in words:
        assert w in line, line


def test_a_bug_still_shows_its_traceback():
    from common.errors import cli_entry

    @cli_entry
    def main():
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        main()
