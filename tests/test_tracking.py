"""Run tracking (common.tracking): a PPO run and a pretraining run write TensorBoard event files through
accelerate's tracker, whose scalars read back equal the rows of metrics.jsonl; the tracking section turns it off."""

from __future__ import annotations

import json

import pytest

from common.tracking import TENSORBOARD_DIR, Tracker, TrackingConfig, flat_hparams, open_tracker, scalars
from tests.test_ppo_train import PROMPTS, count_chosen, load_tiny, tiny_config


def read_events(folder):
    """{tag: {step: value}} of the scalars, and the text tags, in the TensorBoard event files under ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    values = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    return values, acc.Tags()["tensors"]


def test_scalars_keep_numbers_only():
    row = {"step": 3, "reward_mean": 0.5, "early_stopped": True, "n": 4, "name": "x", "nan": float("nan"), "l": [1]}
    assert scalars(row) == {"reward_mean": 0.5, "early_stopped": 1.0, "n": 4.0}


def test_flat_hparams_joins_nested_keys_and_writes_lists_as_text():
    flat = flat_hparams({"lr": 1e-4, "gen_kwargs": {"temperature": 1.0}, "adam_betas": [0.9, 0.95], "x": None})
    assert flat == {"lr": 1e-4, "gen_kwargs.temperature": 1.0, "adam_betas": "[0.9, 0.95]", "x": None}


def test_open_tracker_writes_scalars_and_the_config(tmp_path):
    with open_tracker(tmp_path, {"lr": 0.001, "nested": {"k": 2}}, name="run", settings=TrackingConfig()) as tracker:
        assert tracker.enabled
        for step in (1, 2, 3):
            tracker.log({"step": step, "loss": 1.0 / step, "label": "ignored"}, step)
    values, texts = read_events(tmp_path / TENSORBOARD_DIR / "run")
    assert values["loss"] == pytest.approx({1: 1.0, 2: 0.5, 3: 1 / 3})
    assert "config/text_summary" in texts
    hparams = list((tmp_path / TENSORBOARD_DIR / "run").glob("*/hparams.yml"))
    assert hparams and "nested.k: 2" in hparams[0].read_text()


def test_tracking_off_writes_nothing(tmp_path):
    with open_tracker(tmp_path, {"lr": 0.1}, name="run", settings=TrackingConfig(tensorboard=False)) as tracker:
        tracker.log({"loss": 1.0}, 1)
        assert not tracker.enabled
    assert not (tmp_path / TENSORBOARD_DIR).exists()
    Tracker().log({"loss": 1.0}, 1)  # a tracker without a backend does nothing


def write_profile(path, tensorboard: bool):
    path.write_text(f"tracking:\n  tensorboard: {str(tensorboard).lower()}\n")
    return path


def test_ppo_run_logs_every_metrics_row_to_tensorboard(tiny_policy_dir, tmp_path, monkeypatch):
    from rl_finetune.ppo import save_policy, train

    monkeypatch.setenv("RLHF_CONFIG", str(write_profile(tmp_path / "profile.yaml", True)))
    res = train(
        load_tiny(tiny_policy_dir),
        count_chosen,
        PROMPTS,
        tiny_config(total_steps=3, eval_interval=2, ppo_epochs=1),
        eval_prompts=PROMPTS[:4],
        work_dir=tmp_path / "work",
        progress=False,
    )
    rows = [json.loads(line) for line in (tmp_path / "work" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]  # the same rows as without tracking: eval at 0, then each step
    values, texts = read_events(tmp_path / "work" / TENSORBOARD_DIR / "ppo")
    assert values["reward_mean"] == pytest.approx({r["step"]: r["reward_mean"] for r in rows if "reward_mean" in r})
    assert values["eval/reward"] == pytest.approx({r["step"]: r["eval/reward"] for r in rows if "eval/reward" in r})
    assert set(values["eval/reward"]) == {0, 2, 3}
    assert "config/text_summary" in texts
    saved = save_policy(res, tmp_path / "policy")
    assert list((saved / TENSORBOARD_DIR / "ppo").glob("events.out.tfevents.*"))  # kept beside the saved policy


def test_ppo_run_with_tracking_off_writes_no_event_files(tiny_policy_dir, tmp_path, monkeypatch):
    from rl_finetune.ppo import train

    monkeypatch.setenv("RLHF_CONFIG", str(write_profile(tmp_path / "profile.yaml", False)))
    train(
        load_tiny(tiny_policy_dir),
        count_chosen,
        PROMPTS,
        tiny_config(total_steps=2, eval_interval=2, ppo_epochs=1),
        eval_prompts=PROMPTS[:4],
        work_dir=tmp_path / "work",
        progress=False,
    )
    rows = (tmp_path / "work" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [0, 1, 2]
    assert not (tmp_path / "work" / TENSORBOARD_DIR).exists()


def test_pretraining_logs_its_loss_to_tensorboard(smoke_env):
    from base_policy.pretrain import PretrainConfig, checkpoint_dir, train
    from common.config import load_config
    from common.imdb import DataConfig

    cfg = load_config(PretrainConfig, "pretrain", overrides={"max_steps": 4, "eval_every": 2})
    result = train(cfg, load_config(DataConfig, "data"), progress=False)
    (run,) = (checkpoint_dir() / TENSORBOARD_DIR).iterdir()
    assert run.name == result.metrics["run"]
    values, _ = read_events(run)
    assert values["train/loss"] == pytest.approx(dict(enumerate(result.losses, start=1)))
    assert set(values["eval/val_loss"]) == {2, 4}
