"""The bad-input catalogue (docs/bad_inputs.md): every case gives one clear line naming the problem
and the fix, a non-zero exit for CLIs, no traceback, and leaves the database and the artefacts as
they were. Inputs that are not errors (unicode, HTML, blank lines, ...) are stored verbatim.

The CLIs are called in-process through their ``main(argv)`` (fast); a few run as subprocesses to
check what a user really sees on the terminal.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import db

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "configs" / "smoke.yaml"
DOC = REPO / "docs" / "bad_inputs.md"

UNICODE = "مرحبا بالعالم — שלום 🎬🍿 ünïcödé \u202eRTL-override\u202c 中文"
NASTY = "<script>alert('x')</script> **bold** [link](javascript:alert(1)) <img src=x onerror=alert(1)> # h1\n| a | b |"
BIG = ("a fine film, " * 8000)[:100_000]


# ------------------------------------------------------------------------------------ environment


@pytest.fixture(scope="module")
def template_db(tmp_path_factory) -> Path:
    """An empty database migrated to head, copied for every test (migrating each time is slower)."""
    path = tmp_path_factory.mktemp("template") / "feedback.sqlite"
    engine = db.connect(f"sqlite:///{path}")
    engine.dispose()
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return path


@dataclass
class Env:
    root: Path
    artifacts: Path
    db_file: Path
    policy: Path
    reward: Path
    monkeypatch: pytest.MonkeyPatch
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db_file}"

    def engine(self):
        return db.connect(self.url)

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content, encoding="utf-8")
        return path


@pytest.fixture
def env(smoke_env, template_db, tiny_policy_dir, tiny_reward_dir, monkeypatch):
    root = smoke_env["db_file"].parent.parent
    smoke_env["db_file"].parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(template_db, smoke_env["db_file"])
    artifacts = smoke_env["artifacts"]
    reward = artifacts / "reward_models" / "rm1"
    shutil.copytree(tiny_reward_dir, reward)
    (artifacts / "reward_models" / "latest").write_text("rm1\n")
    policy = artifacts / "base_policy"
    shutil.copytree(tiny_policy_dir, policy)
    monkeypatch.delenv("RLHF_LABEL_TOKEN", raising=False)
    monkeypatch.delenv("RLHF_MIN_FREE_MB", raising=False)
    e = Env(root, artifacts, smoke_env["db_file"], policy, reward, monkeypatch)
    yield e
    for undo in reversed(e.extra.get("cleanups", [])):  # e.g. make a read-only file writable again
        undo()


def snapshot(e: Env) -> tuple:
    """What must not change: every artefact file (name, size, mtime) and every database row."""
    files = sorted(
        (str(p.relative_to(e.artifacts)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in e.artifacts.rglob("*")
        if p.is_file()
    )
    rows = {}
    if e.db_file.is_file():
        con = sqlite3.connect(e.db_file)
        try:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for t in tables:
                data = sorted(
                    map(repr, con.execute(f'SELECT * FROM "{t}"'))
                )  # test-only: table names come from sqlite_master
                rows[t] = hashlib.sha256("\n".join(data).encode()).hexdigest()
        except sqlite3.DatabaseError:  # not a database at all: its bytes must stay the same
            rows["<file>"] = hashlib.sha256(e.db_file.read_bytes()).hexdigest()
        finally:
            con.close()
    return files, rows


def add_items(e: Env, texts: list[str], labels: list[str] | None = None, labeler: str = "alice") -> list[int]:
    engine = e.engine()
    ids = db.add_completions(
        engine,
        [
            db.NewCompletion(prompt=f"This movie {i} was", text=t, model_version_id=None, gen_params={})
            for i, t in enumerate(texts)
        ],
    )
    if labels:
        who = db.get_or_create_labeler(engine, labeler)
        for cid, lab in zip(ids, labels):
            db.record_judgement(engine, labeler_id=who, completion_id=cid, label=lab)
    engine.dispose()
    return ids


def free_port() -> int:
    """A local port with nothing listening on it (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call_main(module: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``python -m <module> argv`` in-process; returns (exit code, stdout, stderr)."""
    import importlib

    main = importlib.import_module(f"{module}.__main__").main
    capsys.readouterr()
    try:
        code = main(argv) or 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------ CLI cases
# Each case: id, stage (for the docs), module, setup(env) -> argv, words the error line must contain.


@dataclass
class Case:
    id: str
    stage: str
    module: str
    setup: Callable[[Env], list[str]]
    expect: tuple[str, ...]


def _set_env(e: Env, **values) -> None:
    for k, v in values.items():
        e.monkeypatch.setenv(k, v)


def _one_class(e: Env) -> list[str]:
    add_items(e, [f" good {i}" for i in range(6)], ["good"] * 6)
    return ["--no-progress", "--set", f"backbone={e.reward}"]


def _only_skips(e: Env) -> list[str]:
    add_items(e, [f" meh {i}" for i in range(4)], ["skip"] * 4)
    return ["--no-progress", "--require-labels"]


def _corrupt_policy(e: Env) -> list[str]:
    (e.policy / "model.safetensors").write_bytes(b"\x00garbage, not safetensors" * 10)
    return ["generate", "--print", "--policy", str(e.policy), "-n", "1"]


def _corrupt_reward(e: Env) -> list[str]:
    (e.reward / "model.safetensors").write_bytes(b"\x00garbage, not safetensors" * 10)
    return ["predict", "--model", str(e.reward), "a fine film"]  # options before the text (intermixed)


def _not_sqlite(e: Env) -> list[str]:
    e.db_file.write_bytes(b"this is not a SQLite database, just text\n" * 200)
    return ["stats"]


def _folder_db(e: Env) -> list[str]:
    folder = e.root / "a-folder"
    folder.mkdir()
    _set_env(e, RLHF_DB_URL=f"sqlite:///{folder}")
    return ["stats"]


def _newer_schema(e: Env) -> list[str]:
    con = sqlite3.connect(e.db_file)
    con.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    con.commit()
    con.close()
    return ["stats"]


def _empty_prompt_file(e: Env) -> list[str]:
    return ["import-prompts", str(e.write("prompts.txt", "\n   \n\t\n"))]


def _binary_prompt_file(e: Env) -> list[str]:
    return ["import-prompts", str(e.write("prompts.txt", b"\xff\xfe\x00binary\x00\x9c"))]


def _long_prompt_file(e: Env) -> list[str]:
    return ["generate", "--print", "--policy", str(e.policy), "-n", "1", "--max-new-tokens", "200"]


def _export_to_symlink(e: Env) -> list[str]:
    target = e.write("keep.txt", "not an export\n")
    link = e.root / "labels-link.jsonl"
    link.symlink_to(target)
    return ["export", "--format", "jsonl", str(link)]


def _export_to_fifo(e: Env) -> list[str]:
    fifo = e.root / "labels.fifo"
    os.mkfifo(fifo)
    return ["export", "--format", "csv", str(fifo)]


def _reward_without_tokenizer(e: Env) -> list[str]:
    from reward_training.api import TOKENIZER_FILES

    for name in TOKENIZER_FILES:
        (e.reward / name).unlink(missing_ok=True)
    return ["predict", "--model", str(e.reward), "a fine film"]


def _corrupt_reward_config(e: Env) -> list[str]:
    (e.reward / "reward_config.json").write_text("{not json")
    return ["predict", "--model", str(e.reward), "a fine film"]


def _empty_latest(e: Env) -> list[str]:
    (e.artifacts / "reward_models" / "latest").write_text("")
    return ["predict", "a fine film"]


def read_only(e: Env, path: Path) -> None:
    """Make ``path`` (a file or folder) unwritable for this process, undone after the test: the
    immutable attribute as root (who ignores permissions), else the permission bits."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode:
            pytest.skip("cannot make a file read-only for root here (no chattr +i)")
        undo = lambda: subprocess.run(["chattr", "-i", str(path)], check=False)  # noqa: E731
    else:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        undo = lambda: path.chmod(mode)  # noqa: E731
    e.extra.setdefault("cleanups", []).append(undo)


def _read_only_db(e: Env, argv: list[str]) -> list[str]:
    read_only(e, e.db_file)
    return argv


def _read_only_reward_models(e: Env) -> list[str]:
    read_only(e, e.artifacts / "reward_models")
    return ["--no-progress", "--set", f"backbone={e.reward}"]


def _disk_full(e: Env, argv: list[str]) -> list[str]:
    _set_env(e, RLHF_MIN_FREE_MB=str(10**12))  # a threshold no disk meets: the check a full disk fails
    return argv


def _ppo_cfg_dict(**over) -> dict:
    from common.config import to_dict

    return {**to_dict(_ppo_cfg()), **over}


def _work_run(e: Env, run: str = "ppo-r1", *, state: dict | None = None, owner: dict | None = None) -> Path:
    """A PPO run killed after its first checkpoint: ``policies/.work-<run>/checkpoint``."""
    work = e.artifacts / "policies" / f".work-{run}"
    ckpt = work / "checkpoint"
    ckpt.mkdir(parents=True)
    base = {"step": 1, "elapsed": 1.0, "kl_ctl": {}, "moments": {}, "before": [], "config": _ppo_cfg_dict()}
    (ckpt / "state.json").write_text(json.dumps({**base, "start_policy": str(e.policy), **(state or {})}))
    (ckpt / "policy.pt").write_bytes(b"\x00garbage, not a torch file" * 8)
    (ckpt / "optimizer.pt").write_bytes(b"\x00garbage, not a torch file" * 8)
    if owner is not None:
        (work / "owner.json").write_text(json.dumps(owner))
    return work


def _finished_ppo_run(e: Env) -> list[str]:
    _work_run(e)
    shutil.copytree(e.policy, e.artifacts / "policies" / "ppo-r1")  # its policy was saved before the kill
    return ["ppo", "--resume"]


def _live_ppo_run(e: Env) -> list[str]:
    from common.paths import host_tag

    _work_run(e, owner={"host": host_tag(), "pid": 1, "since": 0})  # pid 1 is always running
    return ["ppo", "--resume"]


def _damaged_ppo_weights(e: Env) -> list[str]:
    _work_run(e)  # state.json is fine; policy.pt is garbage: refused when the checkpoint loads
    return ["ppo", "--resume", "--set", "total_steps=2", "--set", "num_eval_prompts=2", "--set", "num_train_prompts=4"]


def _pretrain_checkpoint(e: Env, content, *, finished: dict | None = None) -> list[str]:
    import torch

    folder = e.artifacts / "checkpoints" / "pretrain"
    folder.mkdir(parents=True)
    if isinstance(content, bytes):
        (folder / "last.pt").write_bytes(content)
    else:
        torch.save(content, folder / "last.pt")
    if finished is not None:
        (folder / "finished.json").write_text(json.dumps(finished))
    return ["pretrain", "--resume", "--no-progress"]


def _smoke_arch(**over) -> dict:
    from base_policy.pretrain import PretrainConfig
    from common.config import load_config

    return {**load_config(PretrainConfig, "pretrain", SMOKE).arch, **over}


def _finished_pretrain(e: Env) -> list[str]:
    ckpt = {"model": {}, "optimizer": {}, "step": 60, "arch": _smoke_arch(), "run": "pretrain-r1"}
    return _pretrain_checkpoint(
        e, ckpt, finished={"run": "pretrain-r1", "steps": 60, "saved_to": str(e.artifacts / "base_policy")}
    )


def _disk_full_during_export(e: Env) -> list[str]:
    import errno

    def full(engine, fmt, dest):
        raise OSError(errno.ENOSPC, "No space left on device", str(dest))

    e.monkeypatch.setattr(db, "export_labels", full)
    return ["export", "--format", "jsonl", str(e.root / "labels.jsonl")]


def _database_disk_full(e: Env) -> list[str]:
    from sqlalchemy import exc as sa_exc

    def full(engine):
        raise sa_exc.OperationalError("INSERT ...", {}, sqlite3.OperationalError("database or disk is full"))

    e.monkeypatch.setattr(db, "stats", full)
    return ["stats"]


def _other_files(e: Env) -> list[str]:
    e.write("notes/todo.txt", "my own notes\n")
    return ["ppo", "--out", str(e.root / "notes"), "--overwrite"]


CLI_CASES = [
    Case(
        "empty-database-require-labels",
        "reward",
        "reward_training",
        lambda e: ["--no-progress", "--require-labels"],
        ("no human labels", "make label"),
    ),
    Case("only-skip-labels", "reward", "reward_training", _only_skips, ("no human labels",)),
    Case("one-class-labels", "reward", "reward_training", _one_class, ("one class", "6 good, 0 bad", "label more")),
    Case(
        "unknown-config-key",
        "pretrain",
        "base_policy",
        lambda e: ["pretrain", "--set", "n_layers=3"],
        ("unknown key", "pretrain.n_layers", "n_layer"),
    ),
    Case(
        "unknown-profile-key",
        "reward",
        "reward_training",
        lambda e: ["--config", str(e.write("p.yaml", "reward:\n  batchsize: 8\n")), "--set", f"backbone={e.reward}"],
        ("unknown key", "reward.batchsize"),
    ),
    Case(
        "unknown-profile-section",
        "ppo",
        "rl_finetune",
        lambda e: ["ppo", "--config", str(e.write("p.yaml", "ppo: {}\nrewards: {}\n"))],
        ("unknown section", "rewards"),
    ),
    Case(
        "wrong-type",
        "ppo",
        "rl_finetune",
        lambda e: ["ppo", "--set", "total_steps=many"],
        ("ppo.total_steps", "wrong type", "int"),
    ),
    Case(
        "wrong-literal",
        "reward",
        "reward_training",
        lambda e: ["--set", "combine=average"],
        ("reward.combine", "not allowed", "majority"),
    ),
    Case(
        "override-without-equals",
        "pretrain",
        "base_policy",
        lambda e: ["pretrain", "--set", "max_steps"],
        ("not KEY=VALUE",),
    ),
    Case(
        "target-without-horizon",
        "ppo",
        "rl_finetune",
        lambda e: ["ppo", "--set", "kl_target=6", "--set", "kl_horizon=null"],
        ("ppo.kl_target", "kl_horizon"),
    ),
    Case(
        "batch-not-dividing-rollouts",
        "ppo",
        "rl_finetune",
        lambda e: ["ppo", "--set", "num_rollouts=5", "--set", "minibatch_size=2"],
        ("multiple of", "minibatch_size"),
    ),
    Case(
        "missing-profile-file",
        "pretrain",
        "base_policy",
        lambda e: _set_env(e, RLHF_CONFIG=str(e.root / "nope.yaml")) or ["pretrain"],
        ("does not exist", "RLHF_CONFIG"),
    ),
    Case(
        "invalid-yaml-profile",
        "generate",
        "base_policy",
        lambda e: ["generate", "--config", str(e.write("p.yaml", "generate: [unclosed\n"))],
        ("not valid YAML",),
    ),
    Case(
        "missing-policy-folder",
        "ppo",
        "rl_finetune",
        lambda e: ["ppo", "--policy", str(e.root / "no-such-policy")],
        ("does not exist", "no-such-policy"),
    ),
    Case(
        "missing-reward-folder",
        "ppo",
        "rl_finetune",
        lambda e: ["ppo", "--policy", str(e.policy), "--reward", str(e.root / "no-such-rm")],
        ("not a reward model folder", "no-such-rm"),
    ),
    Case(
        "policy-as-reward-model",
        "ppo",
        "rl_finetune",
        lambda e: ["ppo", "--reward", str(e.policy)],
        ("GPT2LMHeadModel", "not a reward model", "reward_training"),
    ),
    Case(
        "reward-model-as-policy",
        "generate",
        "base_policy",
        lambda e: ["generate", "--print", "--policy", str(e.reward)],
        ("BertForSequenceClassification", "not a causal language model"),
    ),
    Case(
        "no-reward-model-yet",
        "reward",
        "reward_training",
        lambda e: shutil.rmtree(e.artifacts / "reward_models") or ["predict", "a fine film"],
        ("no reward model", "make reward-model"),
    ),
    Case(
        "policy-folder-without-weights",
        "generate",
        "base_policy",
        lambda e: (e.policy / "model.safetensors").unlink() or ["generate", "--print", "--policy", str(e.policy)],
        ("no weights",),
    ),
    Case("corrupt-policy-safetensors", "generate", "base_policy", _corrupt_policy, ("could not load", "base_policy")),
    Case(
        "corrupt-reward-safetensors",
        "reward",
        "reward_training",
        _corrupt_reward,
        ("reward model", "does not load", "rm1", "make reward-model"),
    ),
    Case(
        "resume-without-checkpoint",
        "pretrain",
        "base_policy",
        lambda e: ["pretrain", "--resume"],
        ("no checkpoint", "without --resume"),
    ),
    Case("non-sqlite-file-as-db", "db", "db", _not_sqlite, ("not a SQLite database", "feedback.sqlite")),
    Case("folder-as-db", "db", "db", _folder_db, ("is a folder",)),
    Case(
        "unreachable-postgres",
        "db",
        "db",
        lambda e: (
            _set_env(e, RLHF_DB_URL=f"postgresql+psycopg://rlhf:s3cret@127.0.0.1:{free_port()}/rlhf") or ["stats"]
        ),
        ("cannot reach the PostgreSQL server", "127.0.0.1", "***"),
    ),
    Case(
        "pretrain-minutes-negative",
        "pretrain",
        "base_policy",
        lambda e: ["pretrain", "--set", "max_minutes=-1", "--set", "max_steps=null"],
        ("pretrain.max_minutes=-1.0 must be a finite number > 0 or null",),
    ),
    Case(
        "pretrain-minutes-zero",
        "pretrain",
        "base_policy",
        lambda e: ["pretrain", "--set", "max_minutes=0"],
        ("pretrain.max_minutes=0.0 must be a finite number > 0",),
    ),
    Case(
        "ppo-minutes-zero",
        "ppo",
        "rl_finetune",
        lambda e: ["ppo", "--set", "max_minutes=0"],
        ("ppo.max_minutes=0.0 must be a finite number > 0 or null",),
    ),
    Case(
        "ppo-no-train-prompts",
        "ppo",
        "rl_finetune",
        lambda e: ["ppo", "--set", "num_train_prompts=0"],
        ("ppo.num_train_prompts=0 must be >= 1",),
    ),
    Case(
        "ppo-negative-eval-prompts",
        "ppo",
        "rl_finetune",
        lambda e: ["ppo", "--set", "num_eval_prompts=-3"],
        ("ppo.num_eval_prompts=-3 must be >= 1",),
    ),
    Case(
        "ppo-lr-nan",
        "ppo",
        "rl_finetune",
        lambda e: ["ppo", "--set", "lr=nan"],
        ("ppo.lr=nan must be a finite number > 0",),
    ),
    Case(
        "ppo-lr-negative",
        "ppo",
        "rl_finetune",
        lambda e: ["ppo", "--set", "lr=-1"],
        ("ppo.lr=-1.0 must be a finite number > 0",),
    ),
    Case(
        "ppo-betas-out-of-range",
        "ppo",
        "rl_finetune",
        lambda e: ["ppo", "--set", "adam_betas=[2,3]"],
        ("ppo.adam_betas=[2.0, 3.0] must be two numbers in [0, 1)",),
    ),
    Case(
        "ppo-negative-seed", "ppo", "rl_finetune", lambda e: ["ppo", "--set", "seed=-1"], ("ppo.seed=-1 must be >= 0",)
    ),
    Case(
        "rloo-one-sample",
        "ppo",
        "rl_finetune",
        lambda e: ["rloo", "--set", "samples_per_prompt=1"],
        ("samples_per_prompt=1 has no leave-one-out baseline", "2 or more"),
    ),
    Case(
        "unknown-learner",
        "ppo",
        "rl_finetune",
        lambda e: ["ppo", "--set", "algorithm=dpo"],
        ("ppo.algorithm='dpo' is not allowed", "'rloo', 'grpo'"),
    ),
    Case(
        "learner-command-conflict",
        "ppo",
        "rl_finetune",
        lambda e: ["rloo", "--set", "algorithm=grpo"],
        ("was given --set algorithm=grpo", "python -m rl_finetune grpo"),
    ),
    Case(
        "reward-human-lr-nan",
        "reward",
        "reward_training",
        lambda e: ["--set", "human_lr=nan"],
        ("reward.human_lr=nan must be a finite number > 0",),
    ),
    Case(
        "reward-max-length-beyond-positions",
        "reward",
        "reward_training",
        lambda e: ["--set", "max_length=100000"],
        ("reward.max_length=100000 is more than the backbone's 512 positions",),
    ),
    Case(
        "reward-model-without-tokenizer",
        "reward",
        "reward_training",
        _reward_without_tokenizer,
        ("has no tokenizer", "rm1", "make reward-model"),
    ),
    Case(
        "corrupt-reward-config",
        "reward",
        "reward_training",
        _corrupt_reward_config,
        ("reward_config.json", "cannot be read as JSON"),
    ),
    Case("empty-latest-pointer", "reward", "reward_training", _empty_latest, ("does not name a run folder", "latest")),
    Case(
        "non-utf8-profile",
        "ppo",
        "rl_finetune",
        lambda e: ["ppo", "--config", str(e.write("p.yaml", b"ppo:\n  lr: \xff\xfe\n"))],
        ("is not UTF-8",),
    ),
    Case("export-to-a-symlink", "db", "db", _export_to_symlink, ("is a symbolic link", "regular file")),
    Case("export-to-a-fifo", "db", "db", _export_to_fifo, ("is not a regular file", "FIFO")),
    Case(
        "run-id-latest",
        "reward",
        "reward_training",
        lambda e: ["--run-id", "latest"],
        ("--run-id 'latest' would replace the pointer", "pick another name"),
    ),
    Case(
        "run-id-outside-artifacts",
        "reward",
        "reward_training",
        lambda e: ["--run-id", "../../x"],
        ("'../../x' is not a safe run name", "my-run-1"),
    ),
    Case(
        "run-id-of-an-existing-run",
        "reward",
        "reward_training",
        lambda e: ["--run-id", "rm1"],
        ("'rm1' names an existing run", "--overwrite"),
    ),
    Case(
        "demo-run-id-with-a-path",
        "demo",
        "demo",
        lambda e: ["--run-id", "a/b"],
        ("'a/b' is not a safe run name",),
    ),
    Case(
        "password-in-unparseable-url",
        "db",
        "db",
        lambda e: _set_env(e, RLHF_DB_URL="postgresql+psycopg://rlhf:s3cret@db-host:notaport/rlhf") or ["stats"],
        ("cannot be parsed", "rlhf:***@db-host"),
    ),
    Case(
        "password-in-url-without-scheme",
        "db",
        "db",
        lambda e: _set_env(e, RLHF_DB_URL="rlhf:s3cret@db-host:5432/rlhf") or ["stats"],
        ("not a database URL", "rlhf:***@db-host"),
    ),
    Case(
        "bad-db-url",
        "db",
        "db",
        lambda e: _set_env(e, RLHF_DB_URL="feedback.sqlite") or ["stats"],
        ("not a database URL", "RLHF_DB_URL"),
    ),
    Case(
        "unsupported-db-backend",
        "db",
        "db",
        lambda e: _set_env(e, RLHF_DB_URL="mysql://u@localhost/x") or ["stats"],
        ("mysql", "sqlite:///"),
    ),
    Case("newer-db-schema", "db", "db", _newer_schema, ("newer than this code knows", "git pull")),
    Case("empty-prompt-file", "db", "db", _empty_prompt_file, ("holds no prompts",)),
    Case("binary-prompt-file", "db", "db", _binary_prompt_file, ("not UTF-8",)),
    Case(
        "missing-prompt-file",
        "generate",
        "base_policy",
        lambda e: ["generate", "--print", "--policy", str(e.policy), "--prompt-file", str(e.root / "nope.txt")],
        ("does not exist", "nope.txt"),
    ),
    Case("max-new-tokens-beyond-context", "generate", "base_policy", _long_prompt_file, ("max_new_tokens", "context")),
    Case("unknown-command", "base_policy", "base_policy", lambda e: ["finetune"], ("unknown command", "pretrain")),
    Case(
        "moved-command",
        "ppo",
        "rl_finetune",
        lambda e: ["pretrain"],
        ("stage-1 command", "python -m base_policy pretrain"),
    ),
    Case("bad-port", "label", "labeling_app", lambda e: ["--port", "70000"], ("not a port number",)),
    # ---- the environment: checked when a stage starts, before any work (issue 21)
    Case(
        "read-only-reward-models-folder",
        "reward",
        "reward_training",
        _read_only_reward_models,
        ("cannot write to", "reward_models", "writable"),
    ),
    Case(
        "disk-full-reward",
        "reward",
        "reward_training",
        lambda e: _disk_full(e, ["--no-progress"]),
        ("MB are free", "RLHF_MIN_FREE_MB", "clean-runs"),
    ),
    Case("disk-full-ppo", "ppo", "rl_finetune", lambda e: _disk_full(e, ["ppo"]), ("MB are free", "PPO needs about")),
    Case(
        "disk-full-pretrain",
        "pretrain",
        "base_policy",
        lambda e: _disk_full(e, ["pretrain", "--no-progress"]),
        ("MB are free", "pretraining needs about"),
    ),
    Case("disk-full-demo", "demo", "demo", lambda e: _disk_full(e, ["--quiet"]), ("MB are free", "the demo needs")),
    Case(
        "bad-min-free-mb",
        "ppo",
        "rl_finetune",
        lambda e: _set_env(e, RLHF_MIN_FREE_MB="lots") or ["ppo"],
        ("RLHF_MIN_FREE_MB='lots' is not a number of megabytes",),
    ),
    Case(
        "artifacts-is-a-file",
        "ppo",
        "rl_finetune",
        lambda e: (
            _set_env(e, RLHF_ARTIFACTS=str(e.write("afile", "x")))
            or ["ppo", "--policy", str(e.policy), "--reward", str(e.reward)]
        ),
        ("is a file", "afile"),
    ),
    Case(
        "read-only-database-reward",
        "reward",
        "reward_training",
        lambda e: _read_only_db(e, ["--no-progress", "--set", f"backbone={e.reward}"]),
        ("refused a write", "readonly", "feedback.sqlite", "writable"),
    ),
    Case(
        "read-only-database-score",
        "reward",
        "reward_training",
        lambda e: _read_only_db(e, ["score"]),
        ("refused a write", "feedback.sqlite"),
    ),
    Case(
        "read-only-database-pretrain",
        "pretrain",
        "base_policy",
        lambda e: _read_only_db(e, ["pretrain", "--no-progress"]),
        ("refused a write", "feedback.sqlite"),
    ),
    Case(
        "read-only-database-generate",
        "generate",
        "base_policy",
        lambda e: _read_only_db(e, ["generate", "--policy", str(e.policy), "-n", "1"]),
        ("refused a write", "feedback.sqlite"),
    ),
    Case(
        "read-only-database-ppo",
        "ppo",
        "rl_finetune",
        lambda e: _read_only_db(e, ["ppo"]),
        ("refused a write", "feedback.sqlite", "RLHF_DB_URL"),
    ),
    Case("disk-full-during-export", "db", "db", _disk_full_during_export, ("no space left", "labels.jsonl")),
    Case("database-disk-full", "db", "db", _database_disk_full, ("is full", "database or disk is full")),
    # ---- output folders: never another kind of model, never an existing run without --overwrite
    Case(
        "ppo-out-reward-model",
        "ppo",
        "rl_finetune",
        lambda e: ["ppo", "--out", str(e.reward)],
        ("holds a reward model", "rm1", "new or empty folder"),
    ),
    Case(
        "ppo-out-reward-model-with-overwrite",
        "ppo",
        "rl_finetune",
        lambda e: ["ppo", "--out", str(e.reward), "--overwrite"],
        ("holds a reward model",),
    ),
    Case(
        "ppo-out-existing-policy",
        "ppo",
        "rl_finetune",
        lambda e: ["ppo", "--out", str(e.policy)],
        ("holds an existing policy", "--overwrite"),
    ),
    Case(
        "ppo-out-is-a-file",
        "ppo",
        "rl_finetune",
        lambda e: ["ppo", "--out", str(e.artifacts / "reward_models" / "latest")],
        ("is a file", "latest"),
    ),
    Case("ppo-out-folder-with-other-files", "ppo", "rl_finetune", _other_files, ("holds other files", "notes")),
    Case(
        "pretrain-out-reward-model",
        "pretrain",
        "base_policy",
        lambda e: ["pretrain", "--out", str(e.reward)],
        ("holds a reward model",),
    ),
    # ---- --resume: names the run, refuses what it cannot continue
    Case(
        "ppo-resume-nothing-to-resume",
        "ppo",
        "rl_finetune",
        lambda e: ["ppo", "--resume"],
        ("no unfinished PPO run", "without --resume"),
    ),
    Case(
        "ppo-resume-finished-run",
        "ppo",
        "rl_finetune",
        _finished_ppo_run,
        ("'ppo-r1' already finished", "clean-runs"),
    ),
    Case(
        "ppo-resume-run-still-training",
        "ppo",
        "rl_finetune",
        _live_ppo_run,
        ("still being trained by pid 1", "wait for it"),
    ),
    Case(
        "ppo-resume-damaged-state",
        "ppo",
        "rl_finetune",
        lambda e: (_work_run(e) / "checkpoint" / "state.json").write_text('{"step": 1, trunc') and ["ppo", "--resume"],
        ("'ppo-r1'", "is damaged", "state.json", "rm -r", "without --resume"),
    ),
    Case(
        "ppo-resume-empty-weights",
        "ppo",
        "rl_finetune",
        lambda e: (_work_run(e) / "checkpoint" / "optimizer.pt").write_bytes(b"") or ["ppo", "--resume"],
        ("is damaged", "optimizer.pt is missing or empty"),
    ),
    Case(
        "ppo-resume-damaged-weights",
        "ppo",
        "rl_finetune",
        _damaged_ppo_weights,
        ("'ppo-r1'", "is damaged", "policy.pt", "rm -r"),
    ),
    Case(
        "ppo-resume-other-policy",
        "ppo",
        "rl_finetune",
        lambda e: _work_run(e, state={"start_policy": str(e.reward)}) and ["ppo", "--resume"],
        ("started from the policy", "--policy"),
    ),
    Case(
        "ppo-resume-other-settings",
        "ppo",
        "rl_finetune",
        lambda e: (
            _work_run(e, state={"config": _ppo_cfg_dict(num_layers_unfrozen=7)})
            and ["ppo", "--resume", "--set", "num_layers_unfrozen=1"]
        ),
        ("ppo.num_layers_unfrozen=7, not 1", "--set num_layers_unfrozen=7"),
    ),
    Case(
        "pretrain-resume-finished-run",
        "pretrain",
        "base_policy",
        _finished_pretrain,
        ("'pretrain-r1' already finished", "without --resume"),
    ),
    Case(
        "pretrain-resume-damaged-checkpoint",
        "pretrain",
        "base_policy",
        lambda e: _pretrain_checkpoint(e, b"PK\x03\x04 truncated zip" * 3),
        ("is not a checkpoint this program can read", "rm -r"),
    ),
    Case(
        "pretrain-resume-not-a-checkpoint",
        "pretrain",
        "base_policy",
        lambda e: _pretrain_checkpoint(e, {"weights": [1, 2, 3]}),
        ("is not a pretraining checkpoint",),
    ),
    Case(
        "pretrain-resume-other-architecture",
        "pretrain",
        "base_policy",
        lambda e: _pretrain_checkpoint(e, {"model": {}, "optimizer": {}, "step": 3, "arch": _smoke_arch(n_layer=9)}),
        ("was trained with", "same model settings"),
    ),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_bad_input(case: Case, env: Env, capsys):
    argv = case.setup(env)
    before = snapshot(env)
    code, out, err = call_main(case.module, argv, capsys)
    assert code == 2, f"exit {code}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    line = errors[0]
    assert " Fix: " in line, line  # the problem, then the fix
    for word in case.expect:
        assert word in line, f"{word!r} not in {line!r}"
    assert "s3cret" not in err  # never print a password
    assert snapshot(env) == before, "the database or the artefacts changed"
    if os.environ.get("RLHF_CATALOGUE_OUT"):  # regenerate the table in docs/bad_inputs.md from real output
        with open(os.environ["RLHF_CATALOGUE_OUT"], "a", encoding="utf-8") as fh:
            fh.write(
                json.dumps(
                    {
                        "id": case.id,
                        "stage": case.stage,
                        "module": case.module,
                        "argv": argv,
                        "code": code,
                        "line": line,
                    }
                )
                + "\n"
            )


# ------------------------------------------------------------------------------------ library cases


def _ppo_cfg(**over):
    from common.config import load_config
    from rl_finetune.ppo.config import PPOConfig

    base = {
        "total_steps": 1,
        "num_rollouts": 2,
        "generation_batch_size": 2,
        "minibatch_size": 2,
        "ppo_epochs": 1,
        "gen_kwargs": {"max_new_tokens": 4},
        "eval_interval": 1000,  # no eval prompts are given; 0 is refused (a count >= 1)
        "checkpoint_interval": 0,
    }
    return load_config(PPOConfig, "ppo", SMOKE, {**base, **over})


LIB_CASES = {
    "nan-reward": (
        lambda e: dict(reward_fn=lambda texts: [float("nan")] * len(texts)),
        ("NaN/inf", "step 0", "finite"),
    ),
    "inf-reward": (lambda e: dict(reward_fn=lambda texts: [0.0] * (len(texts) - 1) + [math.inf]), ("NaN/inf",)),
    "wrong-number-of-scores": (
        lambda e: dict(reward_fn=lambda texts: [0.5] * (len(texts) + 1)),
        ("scores for", "one score per text"),
    ),
    "reward-not-numbers": (lambda e: dict(reward_fn=lambda texts: ["good"] * len(texts)), ("not a list of numbers",)),
    "empty-prompt-list": (lambda e: dict(prompts=[]), ("no prompts",)),
}


@pytest.mark.parametrize("case", list(LIB_CASES), ids=list(LIB_CASES))
def test_ppo_reward_fn_and_prompt_errors(case: str, env: Env):
    from base_policy.loading import load_policy
    from common.errors import UserError
    from rl_finetune.ppo import train

    make, expect = LIB_CASES[case]
    kwargs = {"reward_fn": lambda texts: [0.0] * len(texts), "prompts": ["This movie was", "I hated"], **make(env)}
    before = snapshot(env)
    with pytest.raises(UserError) as info:
        train(
            load_policy(str(env.policy)), kwargs["reward_fn"], kwargs["prompts"], _ppo_cfg(), work_dir=env.root / "work"
        )
    msg = str(info.value)
    assert "\n" not in msg and " Fix: " in msg, msg
    for word in expect:
        assert word in msg, msg
    assert snapshot(env) == before


def test_labeller_name_validation(env: Env):
    from common.errors import UserError

    engine = env.engine()
    for bad in ["", "   ", "x" * 65, "tab\there", "bell\x07", "new\nline", "\u0430lice", "Zoë שלום"]:
        with pytest.raises(UserError) as info:
            db.get_or_create_labeler(engine, bad)
        assert "\n" not in str(info.value) and " Fix: " in str(info.value)
    assert db.stats(engine)["labelers"] == 0
    who = db.get_or_create_labeler(engine, "  Zoë 🎬  ")  # unicode and emoji: fine, stripped
    assert db.get_or_create_labeler(engine, "Zoë 🎬") == who
    assert db.get_or_create_labeler(engine, "ZOË 🎬") == who  # compared case-insensitively
    assert db.get_or_create_labeler(engine, "שלום 🎬") != who  # one script (RTL) is fine
    assert db.stats(engine)["per_labeler"] == {} and db.stats(engine)["labelers"] == 2
    engine.dispose()


# ------------------------------------------------------------------------------------ accepted verbatim


@pytest.mark.parametrize(
    "text",
    [UNICODE, NASTY, BIG, "  leading and trailing spaces  \n\t"],
    ids=["unicode-emoji-rtl", "html-markdown-script", "100kB-completion", "whitespace"],
)
def test_unusual_completions_are_stored_and_exported_verbatim(env: Env, text: str, capsys):
    ids = add_items(env, [text], ["good"], labeler="Zoë 🎬")
    engine = env.engine()
    assert db.get_item(engine, ids[0]).completion == text
    assert [e.completion for e in db.labelled_dataset(engine)] == [text]
    engine.dispose()
    for fmt in ("jsonl", "csv"):
        dest = env.root / f"export.{fmt}"
        code, _, err = call_main("db", ["export", "--format", fmt, str(dest)], capsys)
        assert code == 0, err
        if fmt == "jsonl":
            rows = [json.loads(line) for line in dest.read_text(encoding="utf-8").splitlines()]
        else:
            with open(dest, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        assert rows[0]["completion"] == text
        assert rows[0]["labeler"] == "Zoë 🎬"


def test_huge_completion_is_truncated_for_the_reward_model(env: Env):
    from reward_training import load_reward_fn

    scores = load_reward_fn(env.reward, kind="prob")([BIG, UNICODE, NASTY, ""])
    assert scores.shape == (4,) and bool(((scores >= 0) & (scores <= 1)).all())


def test_prompt_file_with_blank_lines_and_duplicates(env: Env, capsys):
    path = env.write("prompts.txt", "\nThis movie was\n\n  This movie was  \nI hated\n\t\nI hated\n" + UNICODE + "\n")
    code, out, err = call_main("db", ["import-prompts", str(path)], capsys)
    assert code == 0, err
    assert "added 3 new prompt(s)" in out
    code, out, _ = call_main("db", ["import-prompts", str(path)], capsys)  # again: nothing new
    assert code == 0 and "added 0 new prompt(s)" in out
    assert db.stats(env.engine())["prompts"] == 3


def test_prompt_longer_than_the_context_is_cut_from_the_left(env: Env, capsys, caplog):
    long_prompt = "This movie was " * 200  # ~600 tokens, the tiny policy's context is 128
    path = env.write("prompts.txt", long_prompt + "\nI hated\n")
    code, out, err = call_main(
        "base_policy",
        [
            "generate",
            "--print",
            "--policy",
            str(env.policy),
            "-n",
            "2",
            "--prompt-file",
            str(path),
            "--max-new-tokens",
            "8",
        ],
        capsys,
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 2 and rows[0]["prompt"] == long_prompt.strip()
    assert any("truncated from the left" in r.message for r in caplog.records)


# ------------------------------------------------------------------------------------ the app

APP = str(REPO / "labeling_app" / "app.py")


def _app(name: str, token: str | None = None):
    from tests.support.harness import apptest_signed_in

    return apptest_signed_in(name, token)


@pytest.mark.parametrize(
    "name,token,expect",
    [
        ("alice", "wrong-token", "Wrong access token"),
        ("", "s3cret-token", "name"),
        ("x" * 65, "s3cret-token", "64"),
    ],
)
def test_app_refuses_bad_sign_in(env: Env, name, token, expect):
    pytest.importorskip("streamlit")
    env.monkeypatch.setenv("RLHF_LABEL_TOKEN", "s3cret-token")
    add_items(env, [NASTY])
    before = snapshot(env)
    at = _app(name, token)
    assert any(expect in e.value for e in at.error), [e.value for e in at.error]
    assert not any(c.value.startswith("COMPLETION #") for c in at.caption)
    assert all("s3cret-token" not in e.value for e in at.error)
    after = snapshot(env)  # nothing written but the audit row of the failed attempt
    assert after[0] == before[0]
    assert {t: h for t, h in after[1].items() if t != "audit_events"} == {
        t: h for t, h in before[1].items() if t != "audit_events"
    }


def test_app_unicode_labeller_and_html_completion(env: Env):
    pytest.importorskip("streamlit")
    add_items(env, [NASTY])
    at = _app("Zoë 🎬")
    shown = [t.value for t in at.text]
    first_line = NASTY.splitlines()[0]  # the app may mark up line breaks and the prompt around it
    assert any(first_line in value for value in shown), shown  # shown as plain text
    assert not at.get("html")
    assert db.stats(env.engine())["labelers"] == 1


# ------------------------------------------------------------------------------------ subprocesses


def _subprocess(args: list[str], env: Env, **extra) -> subprocess.CompletedProcess:
    child = dict(
        os.environ, RLHF_CONFIG=str(SMOKE), RLHF_ARTIFACTS=str(env.artifacts), RLHF_DB_URL=env.url, PYTHONPATH=str(REPO)
    )
    child.update(extra)
    return subprocess.run(
        [sys.executable, "-m", *args], env=child, cwd=env.root, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args,extra,expect",
    [
        (
            ["db", "stats"],
            {"RLHF_DB_URL": "postgresql://rlhf:s3cret@127.0.0.1:{port}/rlhf"},
            "cannot reach the PostgreSQL server",
        ),
        (["reward_training", "--set", "nonsense=1"], {}, "unknown key 'reward.nonsense'"),
        (["rl_finetune", "ppo", "--set", "kl_target=6", "--set", "kl_horizon=null"], {}, "kl_horizon"),
    ],
    ids=["postgres-unreachable", "reward-unknown-key", "ppo-target-without-horizon"],
)
def test_what_the_terminal_shows(env: Env, args, extra, expect):
    extra = {k: v.format(port=free_port()) for k, v in extra.items()}
    before = snapshot(env)
    proc = _subprocess(args, env, **extra)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expect in errors[0], proc.stderr[-2000:]
    assert "s3cret" not in proc.stderr
    assert snapshot(env) == before


# ------------------------------------------------------------------------------------ the docs


def test_catalogue_lists_every_case():
    doc = DOC.read_text(encoding="utf-8")
    ids = (
        [c.id for c in CLI_CASES]
        + list(LIB_CASES)
        + [
            "labeller-name",
            "unicode-emoji-rtl",
            "html-markdown-script",
            "100kB-completion",
            "prompt-file-blank-lines",
            "duplicate-prompts",
            "prompt-longer-than-context",
            "wrong-access-token",
        ]
    )
    missing = [i for i in ids if f"`{i}`" not in doc]
    assert not missing, f"docs/bad_inputs.md lacks {missing}"


def test_latest_pointer_file_is_accepted_as_the_reward_model(env: Env, capsys):
    code, out, err = call_main(
        "reward_training",
        ["predict", "--model", str(env.artifacts / "reward_models" / "latest"), "a fine film"],
        capsys,
    )
    assert code == 0, err
    assert 0.0 <= json.loads(out.splitlines()[0])["p_good"] <= 1.0


def test_a_pasted_newline_around_the_db_url_is_stripped(env: Env, capsys):
    """RLHF_DB_URL copied with a trailing newline opens the same database, not a new file named 'feedback.sqlite\n'."""
    url = f"sqlite:///{env.db_file}"
    _set_env(env, RLHF_DB_URL=f"  {url}\n")
    code, out, err = call_main("db", ["stats"], capsys)
    assert code == 0, err
    assert not list(env.db_file.parent.glob("*\n*"))
    assert env.db_file.is_file()


def test_commands_print_no_alembic_info_lines(env: Env):
    """Alembic's 'setup plugin ...' INFO lines (every plugin, at every command that reads the migration
    scripts) are noise; --verbose keeps them."""
    import subprocess
    import sys

    code = "import logging; logging.basicConfig(level=logging.INFO); import db; db.engine.head_revision()"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "setup plugin" not in proc.stderr and "INFO alembic" not in proc.stderr
