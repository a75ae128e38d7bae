"""Issue 21, the environment and leftovers:

- a stage that cannot register its model leaves ``latest`` where it was (save, register, then point);
- ``python -m db stats`` lists the unfinished runs and temporary folders under ``RLHF_ARTIFACTS``
  with their sizes, and ``python -m db clean-runs --yes`` (``make clean-runs``) removes only those
  whose owner is dead.

The bad inputs themselves (read-only folders and databases, full disks, damaged checkpoints) are
cases of ``tests/test_bad_inputs.py``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests import test_bad_inputs as bad

call_main, read_only = bad.call_main, bad.read_only
env, template_db = bad.env, bad.template_db  # the catalogue's fixtures: a smoke world with tiny models

REPO = Path(__file__).resolve().parent.parent


def versions(db_file: Path) -> int:
    con = sqlite3.connect(db_file)
    try:
        return con.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0]
    finally:
        con.close()


def database_turns_read_only_after_the_check(e) -> None:
    """The start-of-stage check passes; the database becomes read-only right after it, so the
    stage trains and then fails to register (a disk remounted read-only, a changed permission)."""
    import db.engine

    real = db.engine.check_writable

    def check_then_lock(engine, **kwargs):
        real(engine, **kwargs)
        read_only(e, e.db_file)
        engine.dispose()  # connections opened from now on see the read-only file

    e.monkeypatch.setattr(db.engine, "check_writable", check_then_lock)


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err[-3000:]
    assert " Fix: " in lines[0]
    return lines[0]


def test_reward_model_that_cannot_be_registered_does_not_move_latest(env, capsys):
    database_turns_read_only_after_the_check(env)
    parent = env.artifacts / "reward_models"
    before = versions(env.db_file)
    argv = ["--no-progress", "--run-id", "rm2", "--set", f"backbone={env.reward}"]
    argv += ["--set", "seed_examples=16", "--set", "eval_snippets=16", "--set", "plots=false"]
    code, out, err = call_main("reward_training", argv, capsys)
    assert code == 2, err[-3000:]
    line = one_error_line(err)
    assert "refused a write" in line and "feedback.sqlite" in line
    assert (parent / "latest").read_text().strip() == "rm1"  # still the registered model
    assert versions(env.db_file) == before


def test_ppo_policy_that_cannot_be_registered_does_not_move_latest(env, capsys):
    import shutil

    policies = env.artifacts / "policies"
    shutil.copytree(env.policy, policies / "old-run")
    (policies / "latest").write_text("old-run\n")
    database_turns_read_only_after_the_check(env)
    before = versions(env.db_file)
    argv = ["ppo", "--set", "total_steps=1", "--set", "num_eval_prompts=2", "--set", "num_train_prompts=4"]
    argv += ["--set", "checkpoint_interval=0", "--set", "eval_interval=1000"]
    code, out, err = call_main("rl_finetune", argv, capsys)
    assert code == 2, err[-3000:]
    line = one_error_line(err)
    assert "could not be registered" in line and "`latest` was not moved" in line and "--no-db" in line
    assert (policies / "latest").read_text().strip() == "old-run"
    assert versions(env.db_file) == before
    saved = [p for p in policies.iterdir() if p.name.startswith("ppo-")]
    assert len(saved) == 1 and saved[0].name in line  # the trained policy is kept, and named


# ------------------------------------------------------------------------------------ leftovers


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def make_leftovers(artifacts: Path) -> dict[str, Path]:
    from common.paths import host_tag

    host, dead = host_tag(), dead_pid()
    policies, rms = artifacts / "policies", artifacts / "reward_models"
    made = {
        "dead-run": policies / ".work-ppo-dead",
        "live-run": policies / ".work-ppo-live",
        "dead-tmp": rms / f".rm2.tmp-{host}-{dead}-0badc0de",
        "live-tmp": rms / f".rm3.tmp-{host}-{os.getpid()}-0000beef",
        "other-host-tmp": rms / f".rm4.tmp-otherhost-{dead}-0000cafe",
        "dead-old": artifacts / f".base_policy.old-{host}-{dead}-00000bad",
    }
    for path in made.values():
        path.mkdir(parents=True)
        (path / "model.safetensors").write_bytes(b"\0" * (1 << 20))  # 1 MB each
    (made["dead-run"] / "owner.json").write_text(json.dumps({"host": host, "pid": dead, "since": 0}))
    (made["live-run"] / "owner.json").write_text(json.dumps({"host": host, "pid": 1, "since": 0}))
    return made


def test_stats_lists_leftovers_and_clean_runs_removes_the_dead_ones(env, capsys):
    made = make_leftovers(env.artifacts)
    code, out, err = call_main("db", ["stats"], capsys)
    assert code == 0, err
    left = json.loads(out)["artifacts_leftovers"]
    by_path = {item["path"]: item for item in left["items"]}
    assert len(by_path) == len(made) and left["count"] == len(made)
    assert {i["kind"] for i in left["items"]} == {"unfinished run", "temporary"}
    assert all(i["size_mb"] == 1.0 for i in left["items"]) and left["total_mb"] == 6.0
    removable = {p for p, i in by_path.items() if i["removable"]}
    assert removable == {str(made[k].relative_to(env.artifacts)) for k in ("dead-run", "dead-tmp", "dead-old")}
    assert "running" in by_path["policies/.work-ppo-live"]["owner"]

    code, out, _ = call_main("db", ["clean-runs"], capsys)  # without --yes: only a list
    assert code == 0 and "run with --yes" in out and "3 of 6 removable (3.0 MB)" in out
    assert all(p.exists() for p in made.values())

    code, out, _ = call_main("db", ["clean-runs", "--yes"], capsys)
    assert code == 0 and "removed 3 of 6" in out
    for key, path in made.items():
        assert path.exists() == (key in ("live-run", "live-tmp", "other-host-tmp")), key
    assert (env.artifacts / "reward_models" / "rm1").is_dir() and (env.artifacts / "base_policy").is_dir()


def test_make_clean_runs_runs_db_clean_runs():
    proc = subprocess.run(["make", "-n", "clean-runs"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "-m db clean-runs --yes" in proc.stdout


def test_terminal_shows_one_line_for_a_full_disk(env):
    """As a real subprocess: the start-of-stage check, before the models load."""
    child = dict(
        os.environ,
        RLHF_ARTIFACTS=str(env.artifacts),
        RLHF_DB_URL=env.url,
        RLHF_MIN_FREE_MB=str(10**12),
        PYTHONPATH=str(REPO),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "rl_finetune", "ppo"],
        env=child,
        cwd=env.root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = one_error_line(proc.stderr)
    assert "MB are free" in line and "RLHF_MIN_FREE_MB" in line
