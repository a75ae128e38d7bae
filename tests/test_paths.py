"""Atomic folder writes, the latest pointer, and the environment variables."""

from __future__ import annotations

import os

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


def test_recover_after_crash_between_renames(tmp_path):
    final = tmp_path / "model"
    old = tmp_path / ".model.old-deadbeef"
    old.mkdir()
    (old / "weights").write_text("v1")
    stale = tmp_path / ".model.tmp-0000"
    stale.mkdir()
    paths.recover_dir(final)
    assert (final / "weights").read_text() == "v1"
    assert not old.exists() and not stale.exists()


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
